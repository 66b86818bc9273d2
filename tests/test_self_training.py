"""Self-training rounds (Noisy Student): the round-0 teacher learns the labels, each round caches
its teacher once and trains a noised student from the clean outputs, and that student teaches the
next round — on every backend, through the one pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_recipe
from test_backend_contract import BACKENDS
from test_bad_input import assert_refused
from kdistill.data import load_task_data
from kdistill.recipe import recipe_from_dict
from kdistill.store import StoreReader


def _raw(image_arrays, backend: str = "torch", **self_training) -> dict:
    return {
        "backend": backend,
        "data": {"dataset": "arrays", "path": str(image_arrays), "transfer": {"fraction": 0.5},
                 "augment": {"shift": 1, "teacher_sees": "clean"}},  # what the rounds set anyway
        "teacher": {"model": "mlp", "kwargs": {"hidden": [16]}, "train": {"epochs": 2}},
        "student": {"model": "mlp", "kwargs": {"hidden": [16], "dropout": 0.2}},
        "losses": {"kd": {"temperature": 1}},
        "weights": {"task": 0.5, "kd": 0.5},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "device": "cpu"},
        "compare": {"latency_repeats": 3},
        "self_training": {"rounds": 2, **self_training},
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_rounds_student_teaches_the_next_round_from_clean_outputs(backend, image_arrays, tmp_path, kdistill):
    out = tmp_path / "rounds"
    code, stdout, err = kdistill("run", write_recipe(tmp_path / "r.yaml", _raw(image_arrays, backend)), "--out", out)
    assert code == 0, err
    assert "Self-training: the round-2 student" in stdout and "self-training.md" in stdout
    summary = json.loads((out / "self-training.json").read_text())
    assert [row["round"] for row in summary["rounds"]] == [0, 1, 2]
    reports = {index: json.loads((out / f"round-{index}" / "report.json").read_text()) for index in (1, 2)}
    roles = {index: {model["role"]: model["metrics"]["accuracy"] for model in report["models"]}
             for index, report in reports.items()}
    assert set(roles[1]) == {"teacher", "distilled", "scratch"} and set(roles[2]) == {"teacher", "distilled"}
    assert roles[2]["teacher"] == roles[1]["distilled"]  # round 1's student, scored again as round 2's teacher
    assert [row["student"] for row in summary["rounds"]] == [roles[1]["teacher"], roles[1]["distilled"],
                                                              roles[2]["distilled"]]
    for index in (1, 2):
        manifest = StoreReader(out / "stores" / f"round-{index}").manifest
        assert manifest.views is None  # the teacher labelled the clean samples, once...
        teacher_file = manifest.teacher["path"]
        assert (f"round-{index - 1}/teacher." if index == 1 else f"round-{index - 1}/student.") in teacher_file
    assert "teacher_sees: clean" in (out / "round-1" / "recipe.yaml").read_text()  # ...the student trained on views
    assert (out / "rounds.png").stat().st_size > 0 and not (out / "INCOMPLETE").exists()


def test_a_threshold_keeps_confident_samples_students_may_train_clean_and_resume_keeps_rounds(
        image_arrays, tmp_path, kdistill):
    raw = _raw(image_arrays, threshold=0.4, augment_students=False)
    out, recipe = tmp_path / "rounds", write_recipe(tmp_path / "r.yaml", raw)
    assert kdistill("run", recipe, "--out", out)[0] == 0
    assert "augment: null" in (out / "round-1" / "recipe.yaml").read_text()  # the students saw clean samples
    summary = json.loads((out / "self-training.json").read_text())
    store = StoreReader(out / "stores" / "round-1")
    transfer = recipe_from_dict(_raw(image_arrays))  # the same data: its transfer ids
    ids = load_task_data(transfer.data, transfer.task).transfer.ids
    logits = store.fetch(ids).astype(np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    expected = int((probabilities.max(1) / probabilities.sum(1) >= 0.4).sum())
    assert 0 < summary["rounds"][1]["transfer_kept"] == expected <= len(ids)
    assert json.loads((out / "round-1" / "report.json").read_text())["data"]["transfer"] == expected

    finished = (out / "round-1" / "report.json").stat().st_mtime_ns
    (out / "self-training.json").unlink()
    (out / "INCOMPLETE").write_text("interrupted\n")
    assert_refused(kdistill("run", recipe, "--out", out), out, "interrupted self-training run", "--resume")
    assert_refused(kdistill("run", recipe, "--out", out, "--resume", "--set", "train.seed=3"), out,
                   "--resume: the recipe differs", "train")
    assert kdistill("run", recipe, "--out", out, "--resume")[0] == 0
    assert (out / "round-1" / "report.json").stat().st_mtime_ns == finished
    assert json.loads((out / "self-training.json").read_text())["rounds"] == summary["rounds"]

    assert kdistill("run", recipe, "--out", out, "--overwrite", "--set", "self_training.rounds=1")[0] == 0
    assert not (out / "round-2" / "report.json").exists()  # a fresh start forgets the rounds it did not run again

    teacher = out / "round-0" / "teacher.safetensors"  # a given teacher is round 0's, not trained again
    again = tmp_path / "again"
    assert kdistill("run", recipe, "--out", again, "--set", f"teacher.path={teacher}", "--set",
                    "self_training.rounds=1")[0] == 0
    assert not list((again / "round-0").glob("teacher.*"))
    assert StoreReader(again / "stores" / "round-1").manifest.teacher["path"] == str(teacher)
    rounds = json.loads((again / "self-training.json").read_text())["rounds"]
    assert rounds[0]["student"] == summary["rounds"][0]["student"]  # the same teacher, scored the same


@pytest.mark.parametrize("change, needles", [
    ({"data": {"dataset": "digits"}}, ("self_training", "data.transfer")),
    ({"self_training": {"pseudo_labels": "hard"}}, ("self_training.pseudo_labels", "'hard' loss")),
    ({"teacher": {"store": "somewhere"}}, ("self_training", "round-0 teacher")),
    ({"task": "regression", "losses": {"mse": {}}, "weights": {"task": 1, "mse": 1}}, ("self_training",)),
])
def test_a_recipe_the_rounds_cannot_run_is_refused_by_field(change, needles, image_arrays, tmp_path, kdistill):
    raw = {**_raw(image_arrays), **change}
    out = tmp_path / "out"
    assert_refused(kdistill("run", write_recipe(tmp_path / "r.yaml", raw), "--out", out), out, *needles)


def test_clean_teacher_views_need_a_store_and_rounds_refuse_other_verbs(image_arrays, tmp_path, kdistill):
    raw = {key: value for key, value in _raw(image_arrays).items() if key != "self_training"}
    raw["data"] = {**raw["data"], "augment": {"shift": 1, "teacher_sees": "clean"}}
    out = tmp_path / "out"
    assert_refused(kdistill("run", write_recipe(tmp_path / "clean.yaml", raw), "--out", out), out,
                   "data.augment.teacher_sees", "teacher.store")
    rounds = write_recipe(tmp_path / "rounds.yaml", _raw(image_arrays))
    assert_refused(kdistill("compare", rounds, "--out", out), out, "self_training", "kdistill compare")
    assert_refused(kdistill("sweep", rounds, "--trials", 2, "--out", out), out, "self_training", "kdistill sweep")
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = kdistill("run", rounds, "--out", out)
    assert code == 2 and "'notes.txt', which a self-training run does not write" in err
    assert [entry.name for entry in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
