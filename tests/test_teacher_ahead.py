"""When the teacher runs ahead of the student (``train.teacher_ahead``), and what the report says.
That it teaches the same student bit for bit, and resumes to it, is tested over every backend in
test_backend_contract."""

from __future__ import annotations

import json

import pytest

from kdistill.data import load_task_data
from kdistill.errors import KdistillError
from kdistill.pipeline import Pipeline
from kdistill.recipe import load_recipe
from kdistill.run import run
from kdistill.training.ahead import decide

HINT = ["losses={kd: {}, hint: {}}", "weights={task: 0.1, kd: 0.6, hint: 0.3}",
        "features=[{student: fc1, teacher: fc2, loss: hint}]"]
FAST = ["data.limit=300", "train.epochs=1", "teacher.train.epochs=1", "train.progress=false", "train.device=cpu",
        "compare.latency_repeats=3"]


@pytest.mark.parametrize("mode, teacher_model, features, gpu, ahead, says", [
    ("off", True, [], True, False, "train.teacher_ahead: off"),
    ("auto", False, [], True, False, "read from a store"),
    ("auto", True, ["hint"], True, False, "feature losses hint need the teacher inside the step"),
    ("auto", True, [], True, True, "a GPU"),
    ("auto", True, [], False, False, "on a CPU the teacher in the step already has every core"),
    ("on", True, [], False, True, "train.teacher_ahead: on"),
])
def test_the_decision_and_its_reason(mode, teacher_model, features, gpu, ahead, says):
    decision = decide(mode, teacher_model, features, gpu)
    assert decision.ahead is ahead and says in decision.reason


def test_on_with_a_feature_loss_is_refused_by_name():
    recipe = load_recipe(None, [*FAST, *HINT, "train.teacher_ahead=on"])
    with pytest.raises(KdistillError, match=r"train.teacher_ahead: on cannot run the teacher ahead with feature "
                                            r"losses \(hint\)"):
        Pipeline(recipe, load_task_data(recipe.data, recipe.task))


def test_the_report_says_whether_the_teacher_ran_ahead(tmp_path):
    directory, _ = run(load_recipe(None, [*FAST, "train.teacher_ahead=on"]), tmp_path / "on")
    assert json.loads((directory / "report.json").read_text())["environment"]["teacher_ahead"] == \
        "on (train.teacher_ahead: on)"
    assert "Teacher run ahead of the student (`train.teacher_ahead`): on (train.teacher_ahead: on)." in \
        (directory / "report.md").read_text()
    directory, _ = run(load_recipe(None, [*FAST, *HINT]), tmp_path / "hint")
    assert "off (feature losses hint need the teacher inside the step)" in (directory / "report.md").read_text()
