"""DeiT's distillation token on every backend: a zoo ViT with a class and a distillation head;
the task loss reads the class head and the distillation loss the distillation head (checked
against the numpy reference), inference averages the two, and the report scores each head."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_recipe
from test_backend_contract import BACKENDS
from kdistill import backends
from kdistill.data import load_task_data
from kdistill.errors import KdistillError
from kdistill.export.exporter import saved_file
from kdistill.losses import reference
from kdistill.objective import Objective
from kdistill.recipe import recipe_from_dict
from kdistill.training.loop import fit

VIT = {"patch": 4, "dim": 16, "depth": 1, "heads": 2, "distillation_token": True}


def _raw(image_arrays, backend: str, loss: str) -> dict:
    return {
        "backend": backend,
        "data": {"dataset": "arrays", "path": str(image_arrays)},
        "teacher": {"model": "cnn", "kwargs": {"channels": [4], "hidden": 16}, "train": {"epochs": 2}},
        "student": {"model": "vit", "kwargs": VIT},
        "losses": {loss: {"temperature": 2.0} if loss == "kd" else {}},
        "weights": {"task": 0.5, loss: 0.5},
        "train": {"epochs": 1, "batch_size": 16, "progress": False, "device": "cpu"},
        "compare": {"latency_repeats": 3},
    }


def test_the_heads_each_learn_and_a_class_head_without_the_task_loss_is_refused():
    out = np.arange(12.0).reshape(2, 6)  # [class | dist] of 3 classes
    taught = Objective("classification", {"task": 1, "kd": 1}, {"kd": {"temperature": 1.0}}, heads=2)
    features_only = Objective("classification", {"task": 1, "hint": 1}, {"hint": {}}, heads=2)
    assert [head.tolist() for head in taught.split(out)[0]] == [out[:, :3].tolist()]
    assert [head.tolist() for head in features_only.split(out)[0]] == [out[:, :3].tolist(), out[:, 3:].tolist()]
    assert taught.split(out)[1].tolist() == out[:, 3:].tolist()
    with pytest.raises(KdistillError, match="weights.task: a student with a distillation token"):
        Objective("classification", {"kd": 1}, {"kd": {"temperature": 1.0}}, heads=2)


@pytest.mark.parametrize("loss", ["kd", "hard"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_task_reads_the_class_head_and_distillation_the_dist_head(backend, loss, image_arrays):
    """One step over the whole training split from fixed teacher logits: the step's parts are the
    reference task loss of the class head and the reference distillation loss of the dist head."""
    recipe = recipe_from_dict(_raw(image_arrays, backend, loss))
    data = load_task_data(recipe.data, recipe.task)
    backend_ = backends.load(backend)
    device = backend_.device("cpu")
    train = recipe.train.model_copy(update={"batch_size": len(data.train)})
    teacher = np.random.default_rng(1).normal(scale=2.0, size=(int(data.train.ids.max()) + 1, 3)).astype(np.float32)
    with backend_.scope(device, train):
        student, _ = backend_.build(recipe.student, data, "student", 0, device)
        heads = {layer: backend_.embed_array(student, data.train.x, layer, 256, device) for layer in ("head", "dist_head")}
        objective = Objective("classification", recipe.weights, {loss: recipe.loss_settings(loss)}, heads=2)
        distiller = backend_.distiller(student, objective, None, (), None, device, 0)
        history = fit("distilled", backend_, distiller, data, train, device,
                      teacher_outputs=lambda ids, views: teacher[ids])
    one_hot = 20.0 * np.eye(3)[data.train.y]  # hard(s, t) is the cross-entropy with argmax t: here the labels
    t = teacher[data.train.ids]
    expected = {"task": reference.hard(heads["head"], one_hot),
                loss: reference.kd(heads["dist_head"], t, 2.0) if loss == "kd" else reference.hard(heads["dist_head"], t)}
    for name, value in expected.items():
        assert history.loss[0][name] == pytest.approx(value, rel=2e-4), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_token_student_predicts_the_mean_of_its_heads_and_the_report_scores_each(backend, image_arrays, tmp_path,
                                                                                   kdistill):
    out = tmp_path / "deit"
    code, _, err = kdistill("run", write_recipe(tmp_path / "r.yaml", _raw(image_arrays, backend, "hard")), "--out", out)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    models = {model["role"]: model["metrics"] for model in report["models"]}
    assert "class_head_accuracy" not in models["teacher"]  # a one-head CNN
    for role in ("distilled", "scratch"):
        assert {"accuracy", "class_head_accuracy", "dist_head_accuracy"} <= set(models[role]), role
    assert "test class_head_accuracy" in (out / "report.md").read_text()

    recipe = recipe_from_dict(_raw(image_arrays, backend, "hard"))
    data = load_task_data(recipe.data, recipe.task)
    backend_ = backends.load(backend)
    device = backend_.device("cpu")
    student, _ = backend_.build(recipe.student.model_copy(update={"path": str(saved_file(out / "student", "student"))}),
                                data, "student", 0, device)
    heads = [backend_.embed_array(student, data.test.x, layer, 256, device) for layer in ("head", "dist_head")]
    np.testing.assert_allclose(backend_.predict(student, data.test.x, 256, device), (heads[0] + heads[1]) / 2,
                               rtol=1e-4, atol=1e-5)

    saved = saved_file(out / "student", "student")  # by path alone it would train as one head: refused by name
    code, _, err = kdistill("run", tmp_path / "r.yaml", "--out", tmp_path / "again", "--set", f"student={{path: {saved}}}")
    assert code == 2 and "has a distillation head (dist_head)" in err and "Traceback" not in err
