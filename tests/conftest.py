"""Shared helpers for the pipeline and CLI tests: a fast version of the built-in recipe, an
in-process CLI caller, one finished default run shared by the session, and small datasets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kdistill.cli import main
from kdistill.recipe import BUILTIN_DIR, DEFAULT_RECIPE, load_recipe

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:  # recipes name test models as 'kd_factories:NAME'
    sys.path.insert(0, str(TESTS))

# the default recipe, cut to a few seconds: 2 epochs for teacher and student, 3 latency repeats;
# on the CPU, where runs are promised to be bit-for-bit reproducible
FAST = ("train.epochs=2", "teacher.train.epochs=2", "compare.latency_repeats=3", "train.progress=false",
        "train.device=cpu")

requires_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the torch extra")


def _uses_a_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(
        found[-1].scope == "module" and found[-1].params is None for found in info.name2fixturedefs.values())


def _asks_for_fixtures_by_name(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and "request" in info.argnames


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (``make test``), the tests of a module that share a
    module-scoped fixture (one finished run read by several tests; ``request`` may ask for it by
    name) go to one worker together, so the fixture is set up once; every other test is scheduled
    on its own."""
    shared = {item.path for item in items if _uses_a_module_fixture(item)}
    for item in items:
        if item.path in shared and (_uses_a_module_fixture(item) or _asks_for_fixtures_by_name(item)):
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def set_args(*assignments: str) -> list[str]:
    """``--set`` arguments for the CLI: the FAST overrides, then ``assignments`` (later ones win)."""
    return [arg for assignment in (*FAST, *assignments) for arg in ("--set", assignment)]


def default_raw() -> dict:
    """The built-in default recipe as a plain mapping, to edit and write as a YAML file."""
    return yaml.safe_load((BUILTIN_DIR / f"{DEFAULT_RECIPE}.yaml").read_text())


def write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())


def by_role(report: dict) -> dict[str, dict]:
    return {model["role"]: model for model in report["models"]}


@pytest.fixture
def fast_recipe():
    """The default recipe with the FAST overrides, as a validated Recipe."""
    return load_recipe(None, list(FAST))


@pytest.fixture
def kdistill(capsys):
    """Call the CLI in-process: ``kdistill("run", "--out", d, *set_args(...))`` → (exit code, stdout, stderr)."""

    def call(*argv: str) -> tuple[int, str, str]:
        code = main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """One finished fast run of the default recipe, shared read-only by the session's tests."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("default") / "run"
    assert main(["run", "--out", str(out), *set_args()]) == 0
    return out


@pytest.fixture
def image_arrays(tmp_path) -> Path:
    """A tiny image classification set: x (240, 1, 8, 8), 3 classes told apart by which third of the
    image is bright."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 80)
    x = rng.normal(0.0, 0.3, (240, 1, 8, 8)).astype(np.float32)
    for label in range(3):
        x[y == label, :, :, 3 * label:3 * label + 2] += 1.0
    path = tmp_path / "images.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture
def regression_arrays(tmp_path) -> Path:
    """A linear regression set with noise: x (300, 5), y (300,)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + rng.normal(0.0, 0.1, 300)
    path = tmp_path / "regression.npz"
    np.savez(path, x=x, y=y.astype(np.float32))
    return path
