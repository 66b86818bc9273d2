"""Bad input gives one named error (exit code 2, no traceback): never a traceback, never a silent
wrong answer, never a lost user file. Each test feeds one kind of bad input through the CLI."""

from __future__ import annotations

import numpy as np
import pytest


def refused(result: tuple[int, str, str], *needles: str) -> str:
    """Exit code 2 and one ``kdistill: error:`` message, without a traceback, holding every needle."""
    code, _, err = result
    assert code == 2, err
    assert err.startswith("kdistill: error: ") and "Traceback" not in err
    assert err.count("kdistill: error:") == 1
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"
    return err


# --- recipe floats are finite, seeds fit the random generators -------------------------------


@pytest.mark.parametrize(("assignment", "needle"), [
    ("train.temperature=.inf", "train.temperature: inf — Input should be a finite number"),
    ("losses.kd.temperature=.nan", "losses.kd.temperature: nan — Input should be a finite number"),
    ("train.lr=.inf", "train.lr: inf — Input should be a finite number"),
    ("weights.kd=.inf", "weights.kd: inf — Input should be a finite number"),
    ("weights.task=.nan", "weights.task: nan — Input should be a finite number"),
    ("data.split_seed=-1", "data.split_seed: -1 — Input should be greater than or equal to 0"),
    (f"train.seed={2**70}", f"train.seed: {2**70} — Input should be less than"),
    (f"data.augment={{shift: 1, seed: {2**70}}}", f"data.augment.seed: {2**70} — Input should be less than {2**63}"),
])
def test_recipe_refuses_infinite_floats_and_out_of_range_seeds(kdistill, assignment, needle):
    refused(kdistill("validate", "--set", assignment), "invalid recipe", needle)
