"""The JAX backend end to end: the CLI run and its report, the scratch twin's initial parameters,
offline distillation from a store of the JAX teacher's outputs, bit-for-bit resume, hint
features, and the refusals (class mismatch before tracing, NaN stop, store mismatch)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

from conftest import FAST, by_role, default_raw, read_report, set_args, write_recipe
from test_bad_input import assert_refused

jax = pytest.importorskip("jax")
from flax import nnx  # noqa: E402

from kdistill import pipeline as pipeline_module  # noqa: E402
from kdistill.data import load_task_data  # noqa: E402
from kdistill.jax import backend as backend_module  # noqa: E402
from kdistill.jax import fit  # noqa: E402
from kdistill.jax.backend import BACKEND, jitted_forward, predict  # noqa: E402
from kdistill.jax.distiller import Distiller, eval_view  # noqa: E402
from kdistill.jax.models import load_model  # noqa: E402
from kdistill.pipeline import Pipeline  # noqa: E402
from kdistill.recipe import load_recipe, recipe_from_dict  # noqa: E402
from kdistill.report.metrics import task_metrics  # noqa: E402
from kdistill.store import StoreReader  # noqa: E402
from kdistill.teacher import probe_rows  # noqa: E402
from kdistill.training import checkpoint  # noqa: E402

JAX = "backend=jax"


def params_of(model) -> dict:
    return {path: np.array(variable[...]) for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def same_params(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(np.array_equal(first[name], second[name]) for name in first)


def build(*overrides: str) -> Pipeline:
    recipe = load_recipe(None, [*FAST, JAX, *overrides])
    return Pipeline(recipe, load_task_data(recipe.data, recipe.task))


def copied(pipeline: Pipeline, model) -> nnx.Module:
    """An independent copy of ``model`` with its own buffers (training donates the original's)."""
    return BACKEND.clone(model, pipeline.student_spec, pipeline.data, probe_rows(pipeline.data), pipeline.device)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    """One finished fast JAX run of the default recipe, shared read-only by this module's tests."""
    from kdistill.cli import main

    out = tmp_path_factory.mktemp("jax") / "run"
    assert main(["run", "--out", str(out), *set_args(JAX)]) == 0
    return out


def test_cli_run_writes_the_report_for_all_three_models(jax_run):
    report = read_report(jax_run)
    assert report["backend"] == "jax" and report["environment"]["jax"] == jax.__version__
    models = by_role(report)
    assert list(models) == ["teacher", "distilled", "scratch"]
    for model in models.values():
        assert 0.0 <= model["metrics"]["accuracy"] <= 1.0 and len(model["val_history"]) == 2
        assert model["size_bytes"] > 0 and all(value > 0 for value in model["latency_ms"].values())
    assert models["distilled"]["parameters"] < models["teacher"]["parameters"]
    assert models["teacher"]["metrics"]["accuracy"] > 0.3  # learned something in 2 epochs (chance is 0.1)
    for name in ("report.md", "curves.png", "recipe.yaml", "student.safetensors", "student.json"):
        assert (jax_run / name).exists()

    # the saved student reloads to the very numbers in the report
    recipe = load_recipe(jax_run / "recipe.yaml")
    data = load_task_data(recipe.data, recipe.task)
    student = load_model(jax_run / "student.safetensors")
    accuracy = task_metrics("classification", predict(student, data.test.x, 256), data.test.y)["accuracy"]
    assert accuracy == models["distilled"]["metrics"]["accuracy"]


def trained_teacher(run) -> str:
    return f"teacher.path={run / 'teacher.safetensors'}"


def test_scratch_twin_trains_from_the_distilled_students_initial_parameters(jax_run, tmp_path, monkeypatch):
    pipeline = build("data.transfer={fraction: 0.5}", trained_teacher(jax_run))
    initial = params_of(pipeline.student)
    starts, batches = {}, {}
    original_fit, original_call = pipeline_module.fit, Distiller.__call__

    def recording_fit(role, backend, distiller, *args, **kwargs):
        starts[role] = (params_of(distiller.student), dict(distiller.objective.weights), distiller.teacher)
        return original_fit(role, backend, distiller, *args, **kwargs)

    def recording_call(distiller, trainee, teacher, x, y, teacher_out=None):
        batches.setdefault(tuple(distiller.objective.weights), set()).add((x.shape[0], y.shape[0]))  # at trace time
        return original_call(distiller, trainee, teacher, x, y, teacher_out)

    monkeypatch.setattr(pipeline_module, "fit", recording_fit)
    monkeypatch.setattr(Distiller, "__call__", recording_call)
    results = pipeline.execute(tmp_path, resume=False)

    assert [result.role for result in results] == ["teacher", "distilled", "scratch"]
    assert same_params(starts["distilled"][0], initial) and same_params(starts["scratch"][0], initial)
    assert not same_params(params_of(pipeline.student), initial)  # trained; the twin did not start there
    in_step = None if pipeline.ahead.ahead else pipeline.teacher.model  # run ahead: in a worker thread, not the step
    assert starts["distilled"][1:] == (pipeline.recipe.weights, in_step)
    assert starts["scratch"][1:] == ({"task": 1.0}, None)
    # unlabeled transfer rows join only the batches of a distillation loss
    assert all(rows > labeled for rows, labeled in batches[tuple(pipeline.recipe.weights)])
    assert all(rows == labeled for rows, labeled in batches[("task",)])


def test_resumed_fit_equals_an_uninterrupted_one_bit_for_bit(tmp_path, monkeypatch):
    recipe = load_recipe(None, [*FAST, JAX, "train.epochs=3", "student.kwargs={hidden: [16], dropout: 0.2}"])
    data = load_task_data(recipe.data, recipe.task)
    pipeline = Pipeline(recipe, data)  # dropout: its key stream must resume too

    def distiller_from_start():
        return Distiller(copied(pipeline, pipeline.student), recipe.task, {"task": 1.0})

    whole = distiller_from_start()
    whole_history = fit("scratch", whole, data, recipe.train, checkpoint_stem=tmp_path / "whole")

    save = checkpoint.save
    broken = tmp_path / "broken" / "scratch"
    broken.parent.mkdir()

    def save_then_die(stem, arrays, epoch, history):
        save(stem, arrays, epoch, history)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        fit("scratch", distiller_from_start(), data, recipe.train, checkpoint_stem=broken)
    monkeypatch.undo()
    assert checkpoint.load(broken, "scratch")[1] == 1  # interrupted after its second of three epochs
    assert sorted(path.name for path in broken.parent.iterdir()) == ["scratch.ckpt.json", "scratch.ckpt.safetensors"]
    resumed = distiller_from_start()
    resumed_history = fit("scratch", resumed, data, recipe.train, checkpoint_stem=broken, resume=True)

    assert same_params(params_of(resumed.student), params_of(whole.student))
    assert resumed_history.loss == whole_history.loss and resumed_history.val == whole_history.val
    assert len(resumed_history.val) == 3


def test_hint_trains_a_linear_adapter_from_student_to_teacher_width(tmp_path):
    pipeline = build("losses={kd: {}, hint: {}}", "weights={task: 0.1, kd: 0.6, hint: 0.3}",
                     "features=[{student: fc1, teacher: fc2, loss: hint}]")
    adapter = pipeline.distiller.trainee.adapters["0"].map
    assert adapter.kernel.shape == (32, 256)  # student fc1 (32) → teacher fc2 (256)
    before = np.array(adapter.kernel[...])
    history = fit("distilled", pipeline.distiller, pipeline.data, pipeline.recipe.train,
                  checkpoint_stem=tmp_path / "distilled")
    assert not np.array_equal(np.array(pipeline.distiller.trainee.adapters["0"].map.kernel[...]), before)
    assert all(set(epoch) == {"total", "task", "kd", "hint"} and all(map(math.isfinite, epoch.values()))
               for epoch in history.loss)


def test_student_trains_offline_from_a_store_of_the_jax_teachers_outputs(jax_run, tmp_path, kdistill):
    recipe = load_recipe(jax_run / "recipe.yaml")
    data = load_task_data(recipe.data, recipe.task)
    teacher = load_model(jax_run / "teacher.safetensors")
    splits = (data.train, data.val, data.test, data.transfer)
    predictions = tmp_path / "teacher.npz"
    np.savez(predictions, ids=np.concatenate([split.ids for split in splits]),
             predictions=np.concatenate([predict(teacher, split.x, 1024) for split in splits]))
    store = tmp_path / "store"
    code, _, err = kdistill("cache", "--store", store, "--from-predictions", predictions, *set_args(JAX))
    assert code == 0, err
    cached = tmp_path / "cached"  # kdistill cache runs the saved JAX teacher itself: the same logits
    code, _, err = kdistill("cache", "--store", cached, *set_args(JAX, trained_teacher(jax_run)))
    assert code == 0, err
    ids = np.concatenate([split.ids for split in splits])
    np.testing.assert_allclose(StoreReader(cached).fetch(ids), StoreReader(store).fetch(ids), rtol=1e-6, atol=1e-6)

    out = tmp_path / "offline"
    code, _, err = kdistill("run", "--out", out, *set_args(JAX, "teacher.model=null", f"teacher.store={store}"))
    assert code == 0, err
    models = by_role(read_report(out))
    assert list(models) == ["teacher", "distilled", "scratch"]
    assert models["teacher"]["parameters"] is None  # known by its stored outputs only
    teacher_accuracy = by_role(read_report(jax_run))["teacher"]["metrics"]["accuracy"]
    assert models["teacher"]["metrics"]["accuracy"] == pytest.approx(teacher_accuracy, abs=1e-9)
    # same seed, batches and teacher outputs: the offline student is the online one (up to float rounding)
    online, offline = (params_of(load_model(run / "student.safetensors")) for run in (jax_run, out))
    assert online.keys() == offline.keys()
    assert all(np.allclose(online[name], offline[name], rtol=1e-4, atol=1e-5) for name in online)

    # the store no longer fits when the data changes: refused before anything is traced or written
    refused = tmp_path / "refused"
    assert_refused(kdistill("run", "--out", refused, *set_args(JAX, "teacher.model=null", f"teacher.store={store}",
                                                               "data.transfer={fraction: 0.5}")),
                   refused, f"soft-target store {store} does not fit this run")


def test_class_count_mismatch_is_refused_before_any_tracing(tmp_path, kdistill, monkeypatch):
    def no_tracing(*args, **kwargs):
        raise AssertionError("a train step was built")

    monkeypatch.setattr(backend_module, "make_train_step", no_tracing)
    out = tmp_path / "run"
    assert_refused(kdistill("run", "--out", out, *set_args(JAX, "teacher.kwargs={hidden: [16], output_dim: 7}")),
                   out, "teacher: outputs (7,) per sample", "needs (10,)")


def test_nan_loss_stops_the_student_with_its_step_and_checkpoint(jax_run, tmp_path, kdistill):
    out = tmp_path / "run"
    err = assert_refused(kdistill("run", "--out", out, *set_args(
        JAX, trained_teacher(jax_run), "train.optimizer=sgd", "train.lr=1e30", "train.schedule=constant")),
        out, "distilled: loss is not finite at epoch 1, step ", "no checkpoint had been written yet")
    assert "TrainingDiverged" in (out / "INCOMPLETE").read_text()
    assert "nan" in err or "inf" in err


def test_attention_and_conv_hint_on_the_cnn_zoo_model(tmp_path, image_arrays, kdistill):
    raw = default_raw() | {
        "backend": "jax",
        "data": {"dataset": "arrays", "path": str(image_arrays)},
        "teacher": {"model": "cnn", "kwargs": {"channels": [8, 16], "hidden": 32}},
        "student": {"model": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}},
        "losses": {"kd": {}, "attention": {}, "hint": {}},
        "weights": {"task": 0.2, "kd": 0.4, "attention": 0.2, "hint": 0.2},
        "features": [{"student": "relu2", "teacher": "relu2", "loss": "attention"},
                     {"student": "conv1", "teacher": "conv1", "loss": "hint"}],
    }
    recipe = recipe_from_dict(raw, FAST)
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    adapters = pipeline.distiller.trainee.adapters
    assert "0" not in adapters and adapters["1"].map.kernel.shape == (4, 8)  # a 1×1 conv: 4 → 8 channels

    out = tmp_path / "run"
    code, _, err = kdistill("run", write_recipe(tmp_path / "cnn.yaml", raw), "--out", out, *set_args("compare.scratch=false"))
    assert code == 0, err
    models = by_role(read_report(out))
    assert set(models) == {"teacher", "distilled"}
    losses = checkpoint.load(out / "checkpoints" / "distilled", "distilled")[2].loss
    assert all(set(epoch) == {"total", "task", "kd", "attention", "hint"} and all(map(math.isfinite, epoch.values()))
               for epoch in losses)
    assert models["teacher"]["metrics"]["accuracy"] > 0.5  # three classes told apart by a bright stripe


def test_feature_losses_on_a_model_without_named_layers_are_refused(tmp_path, kdistill):
    out = tmp_path / "run"
    assert_refused(kdistill("run", "--out", out, *set_args(
        JAX, "task=ranking", "data.dataset=synthetic_ranking", "data.transfer=null",
        "data.ranking={n_users: 40, n_items: 60, list_length: 20, positives: 5, dim: 4}",
        "teacher.model=user_item", "teacher.kwargs={embedding: 8, hidden: [16]}",
        "student.model=user_item", "student.kwargs={embedding: 4, hidden: []}",
        "losses={listwise: {}, hint: {}}", "weights={task: 0.2, listwise: 0.5, hint: 0.3}",
        "features=[{student: scorer, teacher: scorer, loss: hint}]")),
        out, "features.student: feature distillation on the JAX backend reads layers of", "UserItemScorer")


def test_a_pure_function_teacher_distills_exactly_as_its_module(jax_run, tmp_path):
    pipeline = build(trained_teacher(jax_run), "train.epochs=1")
    teacher = pipeline.teacher.model
    graphdef, state = nnx.split(eval_view(teacher))  # the teacher's dropout off, as the distiller runs a module
    as_function = partial(jitted_forward, graphdef, state)  # x -> logits, no module
    students = {}
    for name, frozen in (("module", teacher), ("function", as_function)):
        students[name] = copied(pipeline, pipeline.scratch)
        distiller = Distiller(students[name], "classification", pipeline.recipe.weights, {"kd": {"temperature": 1.0}},
                              teacher=frozen, probe=jax.numpy.asarray(probe_rows(pipeline.data)))
        fit("distilled", distiller, pipeline.data, pipeline.recipe.train)
    module, function = params_of(students["module"]), params_of(students["function"])
    assert module.keys() == function.keys()  # the same numbers, up to XLA folding the function's constants
    assert all(np.allclose(module[name], function[name], rtol=1e-4, atol=1e-6) for name in module)
    assert not same_params(params_of(students["module"]), params_of(pipeline.scratch))
