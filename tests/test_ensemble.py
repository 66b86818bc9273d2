"""Ensembles of teachers combined into one soft-target store (``kdistill cache --ensemble``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from conftest import by_role, read_report, requires_torch, set_args
from kdistill.errors import KdistillError
from kdistill.store import StoreReader, StoreWriter
from kdistill.store.ensemble import combine_logits, ensemble_stores

IDS = np.arange(100, 400, dtype=np.int64)


def member(path, seed: int, fingerprint: str = "data-a", classes: int = 5):
    logits = np.random.default_rng(seed).normal(0, 2, (len(IDS), classes)).astype(np.float32)
    writer = StoreWriter(path, ids=IDS, num_classes=classes, teacher={"seed": seed}, dataset_fingerprint=fingerprint,
                         shard_size=64)
    writer.write(IDS, logits)
    writer.close()
    return path, logits


def test_mean_probs_is_the_weighted_mean_of_tempered_probabilities():
    rng = np.random.default_rng(0)
    members = [rng.normal(0, 3, (8, 6)) for _ in range(3)]
    weights = np.array([1.0, 2.0, 1.0]) / 4
    mixed = combine_logits(members, weights, "mean_probs", temperature=2.0)
    expected = sum(w * softmax(z / 2.0, axis=1) for w, z in zip(weights, members))
    np.testing.assert_allclose(softmax(mixed.astype(np.float64) / 2.0, axis=1), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(combine_logits(members, weights, "mean_logits", 2.0),
                               sum(w * z for w, z in zip(weights, members)), rtol=1e-5)


def test_ensemble_store_holds_the_combination_of_its_members(tmp_path):
    members = [member(tmp_path / f"m{seed}", seed) for seed in range(3)]
    count = ensemble_stores([path for path, _ in members], tmp_path / "ens", weights=[3, 1, 1], temperature=4.0,
                            shard_size=50)
    assert count == len(IDS)
    reader = StoreReader(tmp_path / "ens")
    order = np.random.default_rng(1).permutation(IDS)
    positions = np.searchsorted(IDS, order)
    expected = combine_logits([logits[positions] for _, logits in members], np.array([0.6, 0.2, 0.2]), "mean_probs", 4.0)
    np.testing.assert_allclose(reader.fetch(order), expected, rtol=1e-6, atol=1e-6)
    assert reader.manifest.teacher["ensemble"] == [{"seed": 0}, {"seed": 1}, {"seed": 2}]


@pytest.mark.parametrize("problem, needle", [
    ("fingerprint", "has dataset_fingerprint data-b, expected data-a"),
    ("classes", "has num_classes 7, expected 5"),
    ("weights", "need 2 non-negative weights"),
    ("one", "at least two member stores"),
    ("combine", "allowed: mean_probs, mean_logits"),
])
def test_bad_ensembles_are_named(tmp_path, problem, needle):
    first, _ = member(tmp_path / "a", 0)
    second, _ = member(tmp_path / "b", 1, fingerprint="data-b" if problem == "fingerprint" else "data-a",
                       classes=7 if problem == "classes" else 5)
    options = {"weights": [1.0, -1.0]} if problem == "weights" else {"combination": "vote"} if problem == "combine" else {}
    with pytest.raises(KdistillError, match=needle):
        ensemble_stores([first] if problem == "one" else [first, second], tmp_path / "ens", **options)
    assert not (tmp_path / "ens" / "manifest.json").exists()


@requires_torch
def test_student_trains_from_an_ensemble_store(default_run, tmp_path, kdistill):
    teacher = f"teacher.path={default_run / 'teacher.safetensors'}"
    for name, dtype in (("a", "float32"), ("b", "float16")):
        assert kdistill("cache", "--store", tmp_path / name, "--dtype", dtype, *set_args(teacher))[0] == 0
    code, _, err = kdistill("cache", "--ensemble", tmp_path / "a", tmp_path / "b", "--store", tmp_path / "ens",
                            *set_args())
    assert code == 0, err
    code, _, err = kdistill("run", "--out", tmp_path / "run", *set_args(f"teacher.store={tmp_path / 'ens'}", "teacher.model=null"))
    assert code == 0, err
    # two copies of one teacher (float32 and float16) make an ensemble that decides like that teacher
    ensemble, single = by_role(read_report(tmp_path / "run")), by_role(read_report(default_run))
    assert ensemble["teacher"]["metrics"]["accuracy"] == pytest.approx(single["teacher"]["metrics"]["accuracy"], abs=0.003)
    # the report lists each member beside the ensemble, with its agreement with the ensemble
    assert {"member 1: a", "member 2: b"} <= set(ensemble)
    assert ensemble["member 1: a"]["metrics"] == pytest.approx(single["teacher"]["metrics"], abs=1e-9)
    assert ensemble["member 2: b"]["agreement"] > 0.99
