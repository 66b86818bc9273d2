"""When the teacher runs ahead of the student (``train.teacher_ahead``), and what the report says.
That it teaches the same student bit for bit, and resumes to it, is tested over every backend in
test_backend_contract."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from kdistill.data import load_task_data
from kdistill.errors import KdistillError
from kdistill.pipeline import Pipeline
from kdistill.recipe import load_recipe
from kdistill.run import run
from kdistill.training.ahead import AHEAD_CHUNKS, ChunkTeacher, decide, with_outputs
from kdistill.training.plan import Step

HINT = ["losses={kd: {}, hint: {}}", "weights={task: 0.1, kd: 0.6, hint: 0.3}",
        "features=[{student: fc1, teacher: fc2, loss: hint}]"]
FAST = ["data.limit=300", "train.epochs=1", "teacher.train.epochs=1", "train.progress=false", "train.device=cpu",
        "compare.latency_repeats=3"]


@pytest.mark.parametrize("mode, teacher_model, features, gpu, ahead, says", [
    ("off", True, [], True, False, "train.teacher_ahead: off"),
    ("auto", False, [], True, False, "read from a store"),
    ("auto", True, ["hint"], True, False, "feature losses hint need the teacher inside the step"),
    ("auto", True, [], True, True, "an accelerator"),
    ("auto", True, [], False, False, "on a CPU the teacher in the step already has every core"),
    ("on", True, [], False, True, "train.teacher_ahead: on"),
])
def test_the_decision_and_its_reason(mode, teacher_model, features, gpu, ahead, says):
    decision = decide(mode, teacher_model, features, gpu)
    assert decision.ahead is ahead and says in decision.reason


def test_on_with_a_feature_loss_is_refused_by_name():
    recipe = load_recipe(None, [*FAST, *HINT, "train.teacher_ahead=on"])
    with pytest.raises(KdistillError, match=r"train\.teacher_ahead: on cannot run the teacher ahead with feature "
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


def chunks_of(count: int):
    """``count`` chunks of one step each, as the loop hands them over (first step, steps)."""
    return ((index, [Step(np.array([index]), None)]) for index in range(count))


def test_the_worker_runs_the_teacher_ahead_in_order_and_at_most_two_chunks_early():
    asked, consumed = [], []

    def outputs(steps):
        asked.append((int(steps[0].rows[0]), threading.current_thread().name, len(consumed)))
        return np.full((1, 2), steps[0].rows[0], np.float32)

    for first, steps, out in with_outputs(chunks_of(6), ChunkTeacher(outputs, needs_ids=False), ahead=True):
        assert out[0, 0] == first == steps[0].rows[0]
        consumed.append(first)
    assert consumed == list(range(6)) and [chunk for chunk, _, _ in asked] == list(range(6))
    assert all(name.startswith("kdistill-teacher") for _, name, _ in asked)  # never in the training thread
    assert all(chunk - done <= AHEAD_CHUNKS for chunk, _, done in asked)  # a bounded ring


def test_a_teacher_error_surfaces_at_its_chunk_and_closing_leaves_no_worker():
    def outputs(steps):
        if steps[0].rows[0] == 3:
            raise ValueError("teacher failed on chunk 3")
        return np.zeros((1, 2), np.float32)

    seen = []
    with pytest.raises(ValueError, match="chunk 3"):
        for first, _, _ in with_outputs(chunks_of(6), ChunkTeacher(outputs, needs_ids=False), ahead=True):
            seen.append(first)
    assert seen == [0, 1, 2]
    ahead = with_outputs(chunks_of(50), ChunkTeacher(lambda steps: np.zeros((1, 2)), needs_ids=False), ahead=True)
    next(ahead)
    ahead.close()  # stopped early (an error in the student's step, say)
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("kdistill-teacher")]
