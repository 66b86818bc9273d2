"""Properties every backend shares, tested once over the registry's backends through the backend
contract and the one training loop: the scratch twin starts from the student's initial weights;
a resumed fit continues bit for bit; a divergence names its epoch and exact step; the teacher's
outputs are read once per chunk of steps; a student taught from stored outputs equals the one
taught by the teacher in the step."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from kdistill import backends
from kdistill.data import load_task_data
from kdistill.errors import TrainingDiverged
from kdistill.objective import Objective
from kdistill.pipeline import Pipeline
from kdistill.recipe import load_recipe
from kdistill.teacher import probe_rows
from kdistill.training import CHECK_EVERY, checkpoint
from kdistill.training.ahead import by_inputs
from kdistill.training.loop import fit
from kdistill.training.plan import epoch_plan


def installed(name: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in backends.info(name).framework_modules())


BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(not installed(name), reason=f"needs kdistill[{backends.info(name).extra}]"))
            for name in backends.NAMES]


def small(backend: str, *assignments: str):
    """The default recipe on ``backend``, cut to 300 digits and a few epochs, on the CPU."""
    return load_recipe(None, [f"backend={backend}", "data.limit=300", "train.epochs=2", "teacher.train.epochs=1",
                              "train.progress=false", "train.device=cpu", "compare.latency_repeats=3", *assignments])


def fresh_student(pipeline: Pipeline):
    return pipeline.backend.clone(pipeline.scratch, pipeline.student_spec, pipeline.data, probe_rows(pipeline.data),
                                  pipeline.device)


def outputs(pipeline: Pipeline, model, x: np.ndarray) -> np.ndarray:
    return pipeline.backend.predict(model, x, 256, pipeline.device)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scratch_twin_starts_from_the_students_initial_weights_and_is_its_own(backend):
    recipe = small(backend)
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    x = pipeline.data.test.x[:32]
    before = outputs(pipeline, pipeline.student, x)
    np.testing.assert_array_equal(before, outputs(pipeline, pipeline.scratch, x))
    twin = pipeline.backend.distiller(pipeline.scratch, Objective.task_only("classification"), None, (), None,
                                      pipeline.device, 0)
    with pipeline.backend.scope(pipeline.device, recipe.train):
        fit("scratch", pipeline.backend, twin, pipeline.data, recipe.train, pipeline.device)
    assert not np.allclose(before, outputs(pipeline, pipeline.scratch, x))  # the twin trained ...
    np.testing.assert_array_equal(before, outputs(pipeline, pipeline.student, x))  # ... and the student did not move


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_fit_continues_bit_for_bit(backend, tmp_path, monkeypatch):
    recipe = small(backend, "train.epochs=3", "weights={task: 1.0}", "losses={}")
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    data, device, backend_ = pipeline.data, pipeline.device, pipeline.backend
    objective = Objective.task_only("classification")

    def train(name: str, resume: bool = False):
        student = fresh_student(pipeline)
        distiller = backend_.distiller(student, objective, None, (), None, device, 0)
        with backend_.scope(device, recipe.train):
            history = fit("distilled", backend_, distiller, data, recipe.train, device,
                          checkpoint_stem=tmp_path / name / "distilled", resume=resume)
        return outputs(pipeline, student, data.test.x), history

    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    whole, whole_history = train("whole")
    save = checkpoint.save

    def save_then_stop(stem, arrays, epoch, history):
        save(stem, arrays, epoch, history)
        if epoch == 1:
            raise KeyboardInterrupt  # killed after the second epoch's checkpoint
    monkeypatch.setattr(checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train("cut")
    monkeypatch.setattr(checkpoint, "save", save)
    resumed, resumed_history = train("cut", resume=True)
    np.testing.assert_array_equal(whole, resumed)
    assert resumed_history.val == whole_history.val and resumed_history.loss == whole_history.loss


def chunk_outputs(pipeline: Pipeline, logits: np.ndarray, calls: list, poison_step: int | None = None):
    """A soft-target store's ``fetch`` over precomputed teacher logits (by training-sample id),
    recording each call's sample count; with ``poison_step``, that step's rows of epoch 0 are NaN."""
    row_of = {int(sample): row for row, sample in enumerate(pipeline.data.train.ids)}
    batch_size = pipeline.recipe.train.batch_size

    def fetch(ids: np.ndarray, views: np.ndarray | None) -> np.ndarray:
        calls.append(len(ids))
        found = logits[[row_of[int(sample)] for sample in ids]].astype(np.float32)
        first_step = (sum(calls[:-1]) // batch_size)
        if poison_step is not None and first_step <= poison_step < first_step + CHECK_EVERY:
            start = (poison_step - first_step) * batch_size
            found[start:start + batch_size] = np.nan
        return found
    return fetch


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_divergence_names_the_epoch_and_exact_step(backend):
    recipe = small(backend, "train.batch_size=8", "data.transfer=null")
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    steps = epoch_plan(0, 0, len(pipeline.data.train), None, 8).steps
    assert steps > CHECK_EVERY + 5
    logits = np.zeros((len(pipeline.data.train), pipeline.data.output_dim))
    distiller = pipeline.backend.distiller(fresh_student(pipeline), pipeline.distiller.objective, None, (), None,
                                           pipeline.device, 0)
    with pytest.raises(TrainingDiverged) as caught, pipeline.backend.scope(pipeline.device, recipe.train):
        fit("distilled", pipeline.backend, distiller, pipeline.data, recipe.train, pipeline.device,
            teacher_outputs=chunk_outputs(pipeline, logits, [], poison_step=CHECK_EVERY + 3))
    assert (caught.value.epoch, caught.value.step) == (1, CHECK_EVERY + 4)
    assert "epoch 1, step 24" in str(caught.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stored_outputs_are_read_per_chunk_and_teach_as_the_teacher_in_the_step(backend):
    recipe = small(backend, "train.batch_size=8", "data.transfer=null")
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    data, device, backend_ = pipeline.data, pipeline.device, pipeline.backend
    with backend_.scope(device, recipe.train):
        teacher = pipeline.teacher.model
        backend_.set_trainable(teacher, False)
        logits = outputs(pipeline, teacher, data.train.x)
        online_student, offline_student = fresh_student(pipeline), fresh_student(pipeline)
        objective = pipeline.distiller.objective
        online = backend_.distiller(online_student, objective, teacher, (), None, device, 0)
        fit("distilled", backend_, online, data, recipe.train, device)
        calls: list[int] = []
        offline = backend_.distiller(offline_student, objective, None, (), None, device, 0)
        fit("distilled", backend_, offline, data, recipe.train, device, teacher_outputs=chunk_outputs(pipeline, logits, calls))
    steps = epoch_plan(0, 0, len(data.train), None, 8).steps
    chunks = -(-steps // CHECK_EVERY)
    assert len(calls) == recipe.train.epochs * chunks  # one read per chunk of steps, not per step
    assert calls[:chunks] == [min(CHECK_EVERY, steps - first) * 8 for first in range(0, steps, CHECK_EVERY)][:-1] + \
        [len(data.train) - (chunks - 1) * CHECK_EVERY * 8]
    np.testing.assert_allclose(outputs(pipeline, offline_student, data.test.x),
                               outputs(pipeline, online_student, data.test.x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embed_reads_the_named_layer_of_a_model(backend):
    recipe = small(backend)
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    embed, x = pipeline.backend.embed, pipeline.data.test.x[:40]
    np.testing.assert_allclose(embed(pipeline.student, x, "head", 16, pipeline.device), outputs(pipeline, pipeline.student, x),
                               rtol=1e-5, atol=1e-6)  # the head's output is the model's
    hidden = embed(pipeline.student, x, "relu1", 16, pipeline.device)
    assert hidden.shape == (40, 32) and hidden.dtype == np.float64 and (hidden >= 0).all()
    with pytest.raises(Exception, match=r"compare\.embedding: no layer 'nope'"):
        embed(pipeline.student, x, "nope", 16, pipeline.device)
    with pytest.raises(Exception, match=r"compare\.embedding: no layer 'nope'"):  # refused before anything trains
        Pipeline(small(backend, "compare.embedding=nope"), pipeline.data)


def teach_ahead_and_in_step(backend: str, tmp_path, kill_at_step: int | None = None, monkeypatch=None):
    """The same student taught by the teacher inside the step and by the teacher run ahead in a
    worker thread (checkpointing every chunk; with ``kill_at_step``, killed at the first
    checkpoint from that step on in the second epoch, then resumed); their test outputs."""
    recipe = small(backend, "train.batch_size=2", f"train.checkpoint_steps={CHECK_EVERY}")  # 30 steps an epoch
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    data, device, backend_ = pipeline.data, pipeline.device, pipeline.backend
    assert epoch_plan(0, 0, len(data.train), None, 2).steps > CHECK_EVERY and data.transfer is not None
    objective = pipeline.distiller.objective
    with backend_.scope(device, recipe.train):
        teacher = pipeline.teacher.model
        backend_.set_trainable(teacher, False)
        in_step_student = fresh_student(pipeline)
        fit("distilled", backend_, backend_.distiller(in_step_student, objective, teacher, (), None, device, 0),
            data, recipe.train, device)

        def ahead(resume: bool = False):  # a fresh student each time, as a new process builds one
            student = fresh_student(pipeline)
            distiller = backend_.distiller(student, objective, None, (), None, device, 0)
            fit("distilled", backend_, distiller, data, recipe.train, device, checkpoint_stem=tmp_path / "distilled",
                resume=resume, teacher_outputs=by_inputs(backend_.frozen_forward(teacher, device), data),
                teacher_ahead=True)
            return student
        if kill_at_step is not None:
            save = checkpoint.save

            def save_then_stop(stem, arrays, epoch, history, within=None):
                save(stem, arrays, epoch, history, within)
                if within is not None and epoch == 0 and within.step >= kill_at_step:
                    raise KeyboardInterrupt  # killed mid-epoch, with the teacher's next chunks in flight
            monkeypatch.setattr(checkpoint, "save", save_then_stop)
            with pytest.raises(KeyboardInterrupt):
                ahead()
            monkeypatch.setattr(checkpoint, "save", save)
            assert checkpoint.within(tmp_path / "distilled") is not None
        ahead_student = ahead(resume=kill_at_step is not None)
    return outputs(pipeline, in_step_student, data.test.x), outputs(pipeline, ahead_student, data.test.x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_teacher_run_ahead_teaches_the_same_student_bit_for_bit(backend, tmp_path):
    in_step, ahead = teach_ahead_and_in_step(backend, tmp_path)
    np.testing.assert_array_equal(ahead, in_step)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_killed_with_the_teacher_ahead_resumes_to_the_same_student(backend, tmp_path, monkeypatch):
    in_step, resumed = teach_ahead_and_in_step(backend, tmp_path, kill_at_step=CHECK_EVERY, monkeypatch=monkeypatch)
    np.testing.assert_array_equal(resumed, in_step)
