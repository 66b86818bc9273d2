"""The Keras backend: ``kdistill run`` with ``backend: keras`` end to end, the scratch twin's initial
weights, a student trained from a soft-target store, exact resume, bad input, the Distiller as an
ordinary ``keras.Model`` and the DistillationLoss subclasses inside ``keras.distillation.Distiller``,
and the catalogue's kd and hint conformance tests on the Keras JAX and torch backends."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TESTS, by_role, read_report, set_args
from test_bad_input import assert_refused

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")
if keras.backend.backend() != "tensorflow":  # the pipeline tests run on the default Keras backend
    pytest.skip("the Keras pipeline tests run with KERAS_BACKEND=tensorflow", allow_module_level=True)

from kdistill import pipeline as pipeline_module
from kdistill.data import load_task_data
from kdistill.keras.backend import predict
from kdistill.keras.distiller import Distiller
from kdistill.keras.losses import KD, Embedding, Hint
from kdistill.keras.zoo import mlp
from kdistill.losses import reference as R
from kdistill.pipeline import Pipeline
from kdistill.recipe import FeaturePair, load_recipe
from kdistill.report.metrics import task_metrics
from kdistill.store import StoreWriter
from kdistill.training import checkpoint

KERAS = "backend=keras"


def same_weights(first: list, second: list) -> bool:
    return len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))


def test_run_reports_teacher_distilled_and_scratch(tmp_path, kdistill):
    keras_run = tmp_path / "run"
    code, _, err = kdistill("run", "--out", keras_run, *set_args(KERAS, "student.kwargs.dropout=0.2"))
    assert code == 0, err
    report = read_report(keras_run)
    models = by_role(report)
    assert list(models) == ["teacher", "distilled", "scratch"]
    assert report["environment"]["keras_backend"] == "tensorflow"
    assert models["distilled"]["parameters"] < models["teacher"]["parameters"]
    assert all(len(model["val_history"]) == 2 and model["latency_ms"]["batch_256"] > 0 for model in models.values())
    # the saved student is the distilled one: reloaded, it gives the reported test accuracy
    recipe = load_recipe(keras_run / "recipe.yaml")
    data = load_task_data(recipe.data, recipe.task)
    student = keras.models.load_model(keras_run / "student.keras")
    outputs = predict(student, data.test.x, 256)
    assert task_metrics("classification", outputs, data.test.y) == models["distilled"]["metrics"]
    assert (keras_run / "curves.png").stat().st_size > 0


def test_scratch_twin_starts_from_the_distilled_students_initial_weights(tmp_path, monkeypatch):
    recipe = load_recipe(None, [*set_args(KERAS)[1::2], "data.transfer={fraction: 0.5}"])
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    initial = [np.array(w) for w in pipeline.student.get_weights()]
    assert same_weights(pipeline.scratch.get_weights(), initial)
    assert pipeline.scratch is not pipeline.student and pipeline.distiller.objective.distills
    starts = {}
    original_fit = pipeline_module.fit

    def recording_fit(role, backend, distiller, *args, **kwargs):  # the weights each fit starts from (copied)
        student = backend.student(distiller)
        starts[role] = ([np.array(w) for w in student.get_weights()], dict(distiller.objective.weights),
                        distiller.teacher)
        return original_fit(role, backend, distiller, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "fit", recording_fit)
    results = pipeline.execute(tmp_path, resume=False)

    assert [result.role for result in results] == ["teacher", "distilled", "scratch"]
    assert same_weights(starts["distilled"][0], initial) and same_weights(starts["scratch"][0], initial)
    in_step = None if pipeline.ahead.ahead else pipeline.teacher.model  # run ahead: in a worker thread, not the step
    assert starts["distilled"][1:] == (pipeline.recipe.weights, in_step)
    assert starts["scratch"][1:] == ({"task": 1.0}, None)
    assert not same_weights(pipeline.student.get_weights(), initial)  # the student trained
    assert not same_weights(pipeline.scratch.get_weights(), pipeline.student.get_weights())
    parts = {role: set(checkpoint.load(tmp_path / "checkpoints" / role, role)[2].loss[0])
             for role in ("distilled", "scratch")}
    assert parts == {"distilled": {"total", "task", "kd"}, "scratch": {"total", "task"}}  # the twin: task loss only


def test_student_distilled_from_a_store_of_numpy_predictions(tmp_path, kdistill):
    """A black-box teacher known only by its answers: nearest-centroid logits written by numpy."""
    data = load_task_data(load_recipe(None).data, "classification")
    splits = (data.train, data.val, data.test, data.transfer)
    centroids = np.stack([data.train.x[data.train.y == c].mean(axis=0) for c in range(data.output_dim)])
    x = np.concatenate([split.x for split in splits])
    logits = -((x[:, None, :] - centroids[None]) ** 2).sum(axis=-1) / 10.0
    np.save(tmp_path / "answers.npy", logits)
    assert kdistill("cache", "--from-predictions", tmp_path / "answers.npy", "--store", tmp_path / "s")[0] == 0

    out = tmp_path / "run"
    code, _, err = kdistill("run", "--out", out, *set_args(KERAS, f"teacher.store={tmp_path / 's'}", "teacher.model=null"))
    assert code == 0, err
    models = by_role(read_report(out))
    assert list(models) == ["teacher", "distilled", "scratch"]
    assert models["teacher"]["parameters"] is None  # known by its stored outputs only
    test_logits = -((data.test.x[:, None, :] - centroids[None]) ** 2).sum(axis=-1) / 10.0
    expected = task_metrics("classification", test_logits, data.test.y)["accuracy"]
    assert models["teacher"]["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= models["distilled"]["agreement"] <= 1.0


def test_interrupted_run_resumes_to_the_same_student_bit_for_bit(tmp_path, kdistill, monkeypatch):
    three = set_args(KERAS, "train.epochs=3", "teacher.train.epochs=1", "student.kwargs.dropout=0.2",
                     "compare.scratch=false")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert kdistill("run", "--out", whole, *three)[0] == 0

    save = checkpoint.save

    def interrupt_after_second_distilled_epoch(stem, arrays, epoch, history):
        save(stem, arrays, epoch, history)
        if stem.name == "distilled" and epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", interrupt_after_second_distilled_epoch)
    with pytest.raises(KeyboardInterrupt):
        kdistill("run", "--out", broken, *three)
    monkeypatch.undo()
    assert not (broken / "student.keras").exists()
    assert sorted(path.name for path in (broken / "checkpoints").iterdir()) == [
        "distilled.ckpt.json", "distilled.ckpt.safetensors", "teacher.ckpt.json", "teacher.ckpt.safetensors"]
    assert checkpoint.load(broken / "checkpoints" / "distilled", "distilled")[1] == 1

    code, _, err = kdistill("run", "--out", broken, "--resume", *three)
    assert code == 0, err
    resumed, uninterrupted = (keras.models.load_model(d / "student.keras").get_weights() for d in (broken, whole))
    assert same_weights(resumed, uninterrupted)
    assert by_role(read_report(broken))["distilled"]["val_history"] == by_role(read_report(whole))["distilled"]["val_history"]


def test_attention_and_conv_hint_on_the_cnn_zoo_model(tmp_path, image_arrays, kdistill):
    """Channels-last conv features: a 1×1 convolution adapter for hint, none for attention."""
    cnn = (f"data={{dataset: arrays, path: '{image_arrays}'}}",
           "teacher={model: cnn, kwargs: {channels: [8, 16], hidden: 32}}",
           "student={model: cnn, kwargs: {channels: [4, 8], hidden: 16}}",
           "losses={kd: {}, attention: {}, hint: {}}", "weights={task: 0.2, kd: 0.4, attention: 0.2, hint: 0.2}",
           "features=[{student: relu2, teacher: relu2, loss: attention}, {student: conv1, teacher: conv1, loss: hint}]")
    recipe = load_recipe(None, set_args(KERAS, *cnn)[1::2])
    pipeline = Pipeline(recipe, load_task_data(recipe.data, recipe.task))
    attention_adapter, hint_adapter = pipeline.distiller.adapters
    assert attention_adapter is None  # attention compares maps directly
    assert hint_adapter.kernel.shape == (1, 1, 4, 8)  # 1×1 conv: student conv1 (4 channels) → teacher conv1 (8)

    out = tmp_path / "run"
    code, _, err = kdistill("run", "--out", out, *set_args(KERAS, *cnn))
    assert code == 0, err
    assert set(by_role(read_report(out))) == {"teacher", "distilled", "scratch"}
    losses = checkpoint.load(out / "checkpoints" / "distilled", "distilled")[2].loss
    assert set(losses[0]) == {"total", "task", "kd", "attention", "hint"}
    assert all(np.isfinite(value) and value >= 0 for epoch in losses for value in epoch.values())


# --- bad input ------------------------------------------------------------------------------------

HINT = ("losses={kd: {}, hint: {}}", "weights={task: 0.5, kd: 0.3, hint: 0.2}")


@pytest.mark.parametrize(("assignments", "needles"), [
    ((*HINT, "features=[{student: fc9, teacher: fc1, loss: hint}]"),
     ("features.0.student: no layer 'fc9' in 'mlp'; available: flatten, fc1, relu1, head",)),
    ((*HINT, "features=[{student: fc1, teacher: fc1, loss: hint}]", "student={model: 'keras_factories:subclassed'}"),
     ("features.0.student: TwoLayer", "subclassed Keras model", "Functional or Sequential")),
    (("teacher={model: 'keras_factories:extra_classes', kwargs: {extra: 2}}",),
     ("teacher: outputs (12,) per sample", "digits (classification) needs (10,)")),
    (("student={model: 'keras_factories:extra_classes'}",), ("student: outputs (12,) per sample", "needs (10,)")),
    (("student.model=resnet",), ("student.model: 'resnet' is neither a zoo model (mlp, cnn, text_mlp, vit)",)),
    (("teacher.path=missing.keras",), ("teacher.path: 'missing.keras' does not exist",)),
])
def test_bad_models_are_refused_before_training(tmp_path, kdistill, assignments, needles):
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args(KERAS, *assignments)), out, *needles)
    assert not out.exists()


def test_store_with_another_class_count_is_refused(tmp_path, kdistill):
    data = load_task_data(load_recipe(None).data, "classification")
    ids = np.concatenate([split.ids for split in (data.train, data.val, data.test, data.transfer)])
    writer = StoreWriter(tmp_path / "s", ids=ids, num_classes=12, dataset_fingerprint=data.fingerprint(),
                         teacher={"name": "twelve"}, shard_size=4096)
    writer.write(ids, np.random.default_rng(0).normal(size=(len(ids), 12)).astype(np.float32))
    writer.close()
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args(KERAS, f"teacher.store={tmp_path / 's'}", "teacher.model=null")),
                   out, "class count differs (store 12, student 10)")


def test_non_finite_loss_stops_training_with_the_step(tmp_path, kdistill):
    out = tmp_path / "out"
    err = assert_refused(kdistill("run", "--out", out, *set_args(KERAS, "teacher={model: 'keras_factories:nan_in_training'}")),
                         out, "teacher: loss is not finite at epoch 1, step 1 (", "task=nan")
    assert "no checkpoint had been written yet" in err


# --- the Keras API ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_task_data(load_recipe(None).data, "classification")


def test_distiller_is_an_ordinary_keras_model(digits):
    """compile / fit / evaluate with callbacks and History; evaluate gives the student's metrics at T = 1."""
    keras.utils.set_random_seed(0)
    teacher = mlp([64], 10, hidden=[64])
    teacher.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(digits.train.x, digits.train.y, epochs=15, verbose=0)
    student = mlp([64], 10, hidden=[8])
    distiller = Distiller(student, {"task": 0.2, "kd": 0.8, "hint": 0.1}, {"kd": {"temperature": 2.0}, "hint": {}},
                          teacher=teacher, features=[FeaturePair(student="fc1", teacher="fc1", loss="hint")])
    distiller.compile(keras.optimizers.Adam(0.01), metrics=["accuracy"])
    seen = []
    history = distiller.fit(digits.train.x, digits.train.y, epochs=3, batch_size=32, verbose=0,
                            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))])
    assert seen == [0, 1, 2]
    assert {"loss", "total", "task", "kd", "hint", "accuracy"} <= set(history.history)
    assert history.history["kd"][-1] < history.history["kd"][0]
    assert distiller.adapters[0].kernel.shape == (8, 64)  # student fc1 (8) → teacher fc1 (64), trained with it
    assert len(distiller.trainable_variables) == len(student.trainable_variables) + 2
    loss, accuracy = distiller.evaluate(digits.test.x, digits.test.y, verbose=0)
    logits = predict(student, digits.test.x, 256)
    assert accuracy == pytest.approx(task_metrics("classification", logits, digits.test.y)["accuracy"], abs=1e-6)
    assert loss == pytest.approx(R.task(logits, digits.test.y, "classification"), rel=1e-4)


def test_catalogue_losses_plug_into_keras_distillation(digits):
    from keras.distillation import Distiller as KerasDistiller

    keras.utils.set_random_seed(0)
    teacher, student = mlp([64], 10, hidden=[32]), mlp([64], 10, hidden=[32])
    kd = KD(temperature=3.0)
    s, t = np.random.default_rng(0).normal(size=(2, 5, 10))
    assert float(kd.compute_loss(t, s)) == pytest.approx(R.kd(s, t, 3.0), rel=1e-5)  # Keras order: teacher first
    embed = Embedding.from_config(Embedding(metric="cosine").get_config())
    assert float(embed.compute_loss(t, s)) == pytest.approx(R.embedding(s, t, "cosine"), rel=1e-5)
    distiller = KerasDistiller(teacher, student, [kd, Hint(teacher_layer_name="fc1", student_layer_name="fc1")],
                               distillation_loss_weights=[1.0, 0.5], student_loss_weight=0.5)
    distiller.compile("adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = distiller.fit(digits.train.x, digits.train.y, epochs=2, batch_size=64, verbose=0)
    losses = history.history["distillation_loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_kd_and_hint_conformance_on_the_jax_and_torch_keras_backends():
    """Keras fixes its backend at import: one pytest subprocess per backend, run side by side."""
    backends = [name for name in ("jax", "torch") if importlib.util.find_spec(name)]
    runs = {
        backend: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "test_losses_conformance.py"),
             "-k", f"keras-{backend} and (kd or hint) and not binary and not dkd"],
            env={**os.environ, "KERAS_BACKEND": backend}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for backend in backends
    }
    for run in runs.values():
        output = run.communicate(timeout=300)[0]
        assert run.returncode == 0, output[-3000:]
        assert "18 passed" in output, output  # kd: 4 values, 2 gradients, 2 extremes, 1 shape; the same for hint
