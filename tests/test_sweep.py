"""`kdistill sweep`: the report and a best.yaml that runs, trials blind to the test split, resuming
a killed sweep without repeating its trials, and named errors for a bad search space."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from conftest import read_report, requires_torch

from kdistill.cli import main
from kdistill.data import Split, load_task_data
from kdistill.recipe import load_recipe

optuna = pytest.importorskip("optuna")

from kdistill.sweep.job import sweep  # noqa: E402  (needs optuna)
from kdistill.sweep.study import finished, storage_url  # noqa: E402

pytestmark = requires_torch

# the default recipe cut to seconds: 200 training digits, all labeled, 2 epochs for teacher and student
FAST = ("data.limit=200", "data.transfer=null", "train.batch_size=32", "train.epochs=2", "teacher.train.epochs=2", "train.device=cpu",
        "train.progress=false", "compare.latency_repeats=3")
SPACE = {"train.epochs": None, "student.kwargs.hidden": {"choices": [[16], [32]]}}
"""Epochs stay at 2 (the default range dropped); the student's width is searched by both studies."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sets(*assignments: str) -> list[str]:
    return [arg for assignment in (*FAST, *assignments) for arg in ("--set", assignment)]


def learned(summary: dict) -> list[tuple]:
    """What the studies chose, without timings: every trial's role, number, state, value and values."""
    return [(row["role"], row["number"], row["state"], row["value"], row["params"]) for row in summary["trials_table"]]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    return path


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory, space_file) -> tuple[Path, dict]:
    """One finished 3-trial sweep of the fast default recipe, shared read-only by this module."""
    out = tmp_path_factory.mktemp("sweep") / "digits"
    return sweep(load_recipe(None, list(FAST)), 3, space_file, out)


def test_a_sweep_writes_its_report_and_a_best_recipe_that_runs(digits_sweep, kdistill, tmp_path):
    directory, summary = digits_sweep
    assert not (directory / "INCOMPLETE").exists()
    assert json.loads((directory / "sweep.json").read_text()) == json.loads(json.dumps(summary))
    assert (directory / "sweep.md").read_text().splitlines()[0] == summary["verdict"]["text"]
    for plot in ("trials.png", "importance.png", "temperature_weight.png"):
        assert (directory / plot).read_bytes().startswith(PNG_SIGNATURE), plot
    assert summary["trials"] == {"distilled": 3, "scratch": 3}
    rows = summary["trials_table"]
    assert len((directory / "trials.csv").read_text().splitlines()) == 1 + len(rows) == 7
    for row in rows:
        assert "train.epochs" not in row["params"] and row["params"]["student.kwargs.hidden"] in ([16], [32])
        distilling = [path for path in row["params"] if path.startswith(("losses", "weights"))]
        assert bool(distilling) == (row["role"] == "distilled"), row  # the twin draws no distillation setting
    assert len(summary["test"]["distilled"]) == len(summary["test"]["scratch"]) == 3

    best = summary["best"]["distilled"]["params"]
    recipe = load_recipe(directory / "best.yaml")
    assert recipe.train.lr == pytest.approx(best["train.lr"]) and recipe.student.kwargs["hidden"] == best["student.kwargs.hidden"]
    assert list(recipe.losses) == best.get("losses", "kd").split("+")
    assert recipe.teacher.path == str((directory / "teacher.safetensors").resolve())  # the sweep's teacher, not retrained
    code, out, err = kdistill("run", directory / "best.yaml", "--out", tmp_path / "run")
    assert code == 0, err
    report = read_report(tmp_path / "run")
    assert {model["role"] for model in report["models"]} == {"teacher", "distilled", "scratch"}


def test_the_test_split_cannot_change_what_the_trials_choose(digits_sweep, space_file, tmp_path):
    """A sweep whose test labels are all wrong runs the very same trials and picks the same best
    ones: trials never read the test split. Its final test scores, read once at the end, collapse."""
    directory, summary = digits_sweep
    recipe = load_recipe(None, list(FAST))
    data = load_task_data(recipe.data, recipe.task)
    wrong = Split(data.test.x, (data.test.y + 1) % data.output_dim, data.test.ids)
    _, planted = sweep(recipe, 3, space_file, tmp_path / "planted", data=replace(data, test=wrong))
    assert learned(planted) == learned(summary)
    assert planted["best"] == summary["best"]
    for role in ("distilled", "scratch"):
        assert max(planted["test"][role]) < min(0.2, *summary["test"][role]), role


def _finished_trials(out: Path) -> list:
    """The counted trials of the distilled study in ``out`` (its sweep no longer running)."""
    return finished(optuna.load_study(study_name="distilled", storage=storage_url(out)))


def _ended_trials(out: Path) -> int:
    """How many distilled trials have ended, read from the running sweep's SQLite file read-only
    (opening it through Optuna would create its tables, racing the sweep that creates them)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{out / 'sweep.db'}?mode=ro", uri=True, timeout=1)) as db:
            return db.execute("SELECT COUNT(*) FROM trials JOIN studies USING (study_id) WHERE study_name = "
                              "'distilled' AND state IN ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.OperationalError:  # no file or tables yet, or a write under way
        return 0


def test_a_killed_sweep_resumes_without_repeating_its_trials(tmp_path, kdistill):
    out = tmp_path / "sweep"
    argv = ["sweep", "--trials", "3", "--out", str(out), *sets()]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    process = subprocess.Popen([sys.executable, "-m", "kdistill", *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while process.poll() is None:
        if _ended_trials(out) >= 2:
            process.kill()
            break
        time.sleep(0.1)
    _, err = process.communicate()
    assert process.returncode == -9, f"the sweep ended before it was killed: {err.decode()[-2000:]}"
    before = {trial.number: (trial.params, trial.value) for trial in _finished_trials(out)}
    assert (out / "INCOMPLETE").exists() and not (out / "sweep.json").exists()
    teacher = (out / "teacher.safetensors").stat().st_mtime_ns

    code, _, err = kdistill(*argv)
    assert code == 0, err
    counted = _finished_trials(out)
    assert len(counted) == 3
    by_number = {trial.number: trial for trial in counted}
    for number, (params, value) in before.items():  # the first run's trials are kept as they were
        assert (by_number[number].params, by_number[number].value) == (params, value)
    assert len({json.dumps(trial.params, sort_keys=True) for trial in counted}) == 3  # none drawn twice
    assert (out / "teacher.safetensors").stat().st_mtime_ns == teacher  # the teacher was not trained again
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["trials"] == {"distilled": 3, "scratch": 3} and not (out / "INCOMPLETE").exists()


@pytest.mark.parametrize("space, named", [
    ({"train.lrr": {"low": 0.001, "high": 0.01}}, "train.lrr: train has no field 'lrr'"),
    ({"student.kwargs.hidden.width": {"choices": [1]}}, "student.kwargs.hidden.width"),
    ({"train.lr": {"low": 0.01, "high": 0.001}}, "train.lr: empty range: low 0.01 is not below high 0.001"),
    ({"losses.kd.temperature": {"low": "one", "high": 4}}, "losses.kd.temperature.low: 'one' is not a number"),
    ({"train.lr": {"low": 0.0, "high": 0.01}}, "train.lr: 0.0 does not make a valid recipe"),
    ({"train.epochs": {"low": 1.5, "high": 3}}, "train.epochs: an integer field needs integer bounds"),
    ({"teacher.kwargs.hidden": {"choices": [[64]]}}, "teacher.kwargs.hidden: a sweep does not search teacher"),
    ({"losses": {"choices": ["kd+hint"]}}, "losses: 'hint' is not a loss"),
    ({"weights.dkd": {"low": 0, "high": 1}, "losses": None}, "weights.dkd: no trial turns loss 'dkd' on"),
    ({"train.optimizer": {"low": 0, "high": 1}}, "train.optimizer: a range needs a numeric field"),
])
def test_a_bad_search_space_is_a_named_error_before_any_work(tmp_path, kdistill, space, named):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    code, _, err = kdistill("sweep", "--trials", "2", "--space", path, "--out", tmp_path / "out", *sets())
    assert code == 2 and named in err and str(path) in err, err
    assert not (tmp_path / "out").exists()


def test_a_recipe_without_a_distillation_loss_is_a_named_error(tmp_path, kdistill):
    code, _, err = kdistill("sweep", "--trials", "2", "--out", tmp_path / "out",
                            *sets("losses={}", "weights={task: 1.0}"))
    assert code == 2 and "losses: recipe 'digits_mlp' has no distillation loss" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("distilled, says", [
    ([0.880, 0.881, 0.879], "Distillation helped: the best distilled student beats"),
    ([0.8762, 0.8760, 0.8764], "Distillation did not clearly help: the best distilled student leads"),
    ([0.870, 0.871, 0.869], "Distillation did not help: no setting found in 20 trials"),
])
def test_a_lead_within_the_seeds_spread_is_not_called_help(distilled, says):
    from kdistill.sweep.report import verdict

    result = verdict("accuracy", {"distilled": distilled, "scratch": [0.8737, 0.8791, 0.8749]}, 20)
    assert result["text"].startswith(says)
    assert result["beyond_spread"] is says.startswith("Distillation helped")
