"""The PyTorch pipeline: the scratch twin's initial weights, feature distillation (hint adapters,
attention transfer) and the binary, ranking and regression tasks end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import FAST, by_role, default_raw, read_report, set_args, write_recipe

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from kdistill import pipeline as pipeline_module  # noqa: E402
from kdistill import teacher as teacher_module  # noqa: E402
from kdistill.data import load_task_data  # noqa: E402
from kdistill.pipeline import Pipeline  # noqa: E402
from kdistill.recipe import load_recipe, recipe_from_dict  # noqa: E402
from kdistill.report.metrics import ndcg_at_k  # noqa: E402
from kdistill.torch.backend import predict  # noqa: E402
from kdistill.torch.distiller import Distiller  # noqa: E402
from kdistill.torch.models import load_model  # noqa: E402
from kdistill.training import checkpoint  # noqa: E402


def snapshot(state: dict) -> dict:
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def same_state(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)


def build(recipe) -> Pipeline:
    return Pipeline(recipe, load_task_data(recipe.data, recipe.task))


def shares_storage(first: nn.Module, second: nn.Module) -> bool:
    pointers = {tensor.data_ptr() for tensor in first.state_dict().values()}
    return any(tensor.data_ptr() in pointers for tensor in second.state_dict().values())


# --- the fused task + kd step -------------------------------------------------------------------

@pytest.mark.parametrize("labeled, temperature", [(12, 1.0), (5, 4.0)])
def test_fused_task_and_kd_gives_the_catalogue_losses_and_their_gradient(labeled, temperature):
    """The one-node objective (labeled rows first, then transfer rows) equals task + kd computed
    by the catalogue functions, in value and in gradient, including a data-parallel share."""
    from kdistill.torch.losses import SoftTargets, kd, task_and_kd, task_loss

    generator = torch.Generator().manual_seed(labeled)
    s = (3 * torch.randn(12, 7, generator=generator, dtype=torch.float64)).requires_grad_()
    t = 3 * torch.randn(12, 7, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 7, (labeled,), generator=generator)
    total, task, soft = task_and_kd(s, SoftTargets.of(t, temperature), y, 0.2 * 0.5, 0.8 * 1.5, temperature)
    expected_task, expected_kd = task_loss(s[:labeled], y, "classification"), kd(s, t, temperature)
    expected = 0.2 * expected_task * 0.5 + 0.8 * expected_kd * 1.5
    fused_grad, = torch.autograd.grad(total, s)
    expected_grad, = torch.autograd.grad(expected, s)
    assert torch.allclose(task, expected_task.detach(), rtol=1e-12, atol=0)
    assert torch.allclose(soft, expected_kd.detach(), rtol=1e-12, atol=0)
    assert torch.allclose(fused_grad, expected_grad, rtol=1e-10, atol=1e-15)
    with pytest.raises(ValueError, match="teacher_logits"):
        task_and_kd(s, SoftTargets.of(t[:, :6], temperature), y, 1.0, 1.0, temperature)


@pytest.mark.parametrize("classes", [10, 30])  # below and above the classes where the CPU path swaps axes
def test_a_chunks_soft_targets_are_each_steps_own_bit_for_bit(classes):
    """A chunk's soft targets, made at once, are the numbers each step's rows give alone (the
    teacher run in the step, or ahead of it, teaches the same student), for steps of uneven sizes
    that are no multiple of a vector's width; and log_softmax_classes is torch's log_softmax."""
    from kdistill.torch.losses import SoftTargets, log_softmax_classes

    sizes = [100] * 7 + [37, 37, 3]
    logits = 3 * torch.randn(sum(sizes), classes, generator=torch.Generator().manual_seed(classes))
    starts = np.cumsum([0, *sizes])
    for (start, end), chunk in zip(zip(starts, starts[1:]), SoftTargets.per_step(logits, sizes, 2.0)):
        alone = SoftTargets.of(logits[start:end].clone(), 2.0)
        assert torch.equal(chunk.probs, alone.probs) and torch.equal(chunk.log_probs, alone.log_probs)
    torch.testing.assert_close(log_softmax_classes(logits), torch.log_softmax(logits, dim=-1), rtol=0, atol=1e-6)


def test_compiled_step_trains_the_student_the_eager_step_does():
    """``train.compile``: the fused task + kd objective traces into one graph (no break), and an
    offline fit through ``torch.compile`` ends at the eager fit's weights, to float rounding."""
    from kdistill.torch.backend import BACKEND
    from kdistill.torch.losses import SoftTargets, task_and_kd

    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    y = torch.randint(0, 5, (8,), generator=generator)
    traced = torch.compile(lambda *args: task_and_kd(*args, 0.3, 0.7, 2.0), fullgraph=True)
    for eager, compiled in zip(task_and_kd(s, SoftTargets.of(t, 2.0), y, 0.3, 0.7, 2.0),
                               traced(s, SoftTargets.of(t, 2.0), y)):
        assert torch.allclose(eager, compiled, rtol=1e-5)

    recipe = load_recipe(None, [*FAST, "train.epochs=2"])
    data = load_task_data(recipe.data, recipe.task)
    classes = int(data.train.y.max()) + 1
    ids = np.concatenate([split.ids for split in (data.train, data.transfer)])
    teacher_out = np.random.default_rng(0).normal(size=(ids.max() + 1, classes))
    weights = []
    for compiled in (False, True):
        torch.manual_seed(1)
        student = nn.Sequential(nn.Flatten(), nn.Linear(data.train.x[0].size, 16), nn.ReLU(), nn.Linear(16, classes))
        distiller = Distiller(student, "classification", {"task": 0.5, "kd": 0.5}, {"kd": {"temperature": 2.0}},
                              offline=True)
        BACKEND.fit("student", distiller, data, recipe.train.model_copy(update={"compile": compiled}),
                    teacher_outputs=lambda ids, views: teacher_out[ids].astype(np.float32))
        weights.append(snapshot(student.state_dict()))
    assert all(torch.allclose(weights[0][name], weights[1][name], atol=1e-5) for name in weights[0])


# --- the scratch twin ---------------------------------------------------------------------------


def test_scratch_twin_trains_from_the_distilled_students_initial_weights(tmp_path, monkeypatch):
    recipe = load_recipe(None, [*FAST, "data.transfer={fraction: 0.5}"])
    pipeline = build(recipe)
    initial = snapshot(pipeline.student.state_dict())  # built, nothing trained yet
    assert same_state(snapshot(pipeline.scratch.state_dict()), initial)  # the twin: the same initial weights...
    assert pipeline.scratch is not pipeline.student and not shares_storage(pipeline.scratch, pipeline.student)  # ...its own

    starts, batches = {}, {}
    fit, forward = pipeline_module.fit, Distiller.forward

    def recording_fit(role, backend, distiller, *args, **kwargs):
        starts[role] = (snapshot(distiller.student.state_dict()), dict(distiller.objective.weights), distiller.teacher)
        batches[role] = batches[id(distiller)] = []
        return fit(role, backend, distiller, *args, **kwargs)

    def recording_forward(distiller, x, y, teacher_out=None, share=None):
        batches[id(distiller)].append((len(x), len(y)))
        return forward(distiller, x, y, teacher_out, share)

    monkeypatch.setattr(pipeline_module, "fit", recording_fit)
    monkeypatch.setattr(teacher_module, "fit", recording_fit)
    monkeypatch.setattr(Distiller, "forward", recording_forward)
    results = pipeline.execute(tmp_path, resume=False)

    assert [result.role for result in results] == ["teacher", "distilled", "scratch"]
    distilled_start, distilled_weights, distilled_teacher = starts["distilled"]
    scratch_start, scratch_weights, scratch_teacher = starts["scratch"]
    assert same_state(distilled_start, initial) and same_state(scratch_start, initial)
    assert not same_state(pipeline.student.state_dict(), initial)  # the student trained; the twin did not start there
    assert not same_state(pipeline.scratch.state_dict(), initial)  # and the twin trained after it, in its own weights
    assert distilled_weights == recipe.weights
    assert distilled_teacher is (None if pipeline.ahead.ahead else pipeline.teacher.model)  # ahead: not in the step
    assert scratch_weights == {"task": 1.0} and scratch_teacher is None  # task loss only

    # unlabeled transfer rows join only the batches of a distillation loss
    assert any(rows > labeled for rows, labeled in batches["distilled"])
    assert all(rows == labeled for role in ("teacher", "scratch") for rows, labeled in batches[role])


def test_student_initialisation_depends_on_the_seed_not_on_the_teacher():
    base = build(load_recipe(None, [*FAST]))
    other_teacher = build(load_recipe(None, [*FAST, "teacher.kwargs.hidden=[32]"]))
    other_seed = build(load_recipe(None, [*FAST, "train.seed=1"]))
    assert same_state(base.student.state_dict(), other_teacher.student.state_dict())  # built, not trained
    assert same_state(base.scratch.state_dict(), other_teacher.scratch.state_dict())
    assert not same_state(base.teacher.model.state_dict(), other_teacher.teacher.model.state_dict())
    assert not same_state(base.student.state_dict(), other_seed.student.state_dict())


def test_without_scratch_twin_the_report_says_so(tmp_path, kdistill):
    out = tmp_path / "run"
    code, stdout, _ = kdistill("run", "--out", out, *set_args("compare.scratch=false"))
    assert code == 0
    report = read_report(out)
    assert [model["role"] for model in report["models"]] == ["teacher", "distilled"]
    assert report["verdict"]["helped"] is None and "No scratch twin" in stdout
    # no scratch checkpoint and no saved scratch model: the twin never trained
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == [
        "distilled.ckpt.json", "distilled.ckpt.safetensors", "teacher.ckpt.json", "teacher.ckpt.safetensors"]


# --- feature distillation -----------------------------------------------------------------------


def test_hint_distillation_trains_a_linear_adapter_of_the_right_shape(tmp_path):
    raw = default_raw() | {
        "losses": {"kd": {}, "hint": {}},
        "weights": {"task": 0.1, "kd": 0.6, "hint": 0.3},
        "features": [{"student": "fc1", "teacher": "fc2", "loss": "hint"}],
    }
    pipeline = build(recipe_from_dict(raw, FAST))
    adapter = pipeline.distiller.adapters["0"]
    assert isinstance(adapter, nn.Linear)
    widths = (pipeline.student.fc1.out_features, pipeline.teacher.model.fc2.out_features)  # student fc1 → teacher fc2
    assert (adapter.in_features, adapter.out_features) == widths
    assert adapter.in_features != adapter.out_features  # a real width change, not an identity-shaped map
    before = snapshot(adapter.state_dict())

    results = pipeline.execute(tmp_path, resume=False)

    assert [result.role for result in results] == ["teacher", "distilled", "scratch"]
    assert not same_state(adapter.state_dict(), before)  # trained with the student
    arrays, _, history = checkpoint.load(tmp_path / "checkpoints" / "distilled", "distilled")
    assert "model/adapters.0.weight" in arrays and "model/adapters.0.bias" in arrays
    np.testing.assert_array_equal(arrays["model/adapters.0.weight"], adapter.weight.detach().numpy())  # the trained one
    losses = history.loss
    assert all(set(epoch) == {"total", "task", "kd", "hint"} and all(map(math.isfinite, epoch.values())) for epoch in losses)
    assert losses[-1]["hint"] < losses[0]["hint"]


def test_attention_and_conv_hint_on_the_cnn_zoo_model(tmp_path, image_arrays, kdistill):
    raw = default_raw() | {
        "data": {"dataset": "arrays", "path": str(image_arrays)},
        "teacher": {"model": "cnn", "kwargs": {"channels": [8, 16], "hidden": 32}},
        "student": {"model": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}},
        "losses": {"kd": {}, "attention": {}, "hint": {}},
        "weights": {"task": 0.2, "kd": 0.4, "attention": 0.2, "hint": 0.2},
        "features": [{"student": "relu2", "teacher": "relu2", "loss": "attention"},
                     {"student": "conv1", "teacher": "conv1", "loss": "hint"}],
    }
    pipeline = build(recipe_from_dict(raw, FAST))
    assert "0" not in pipeline.distiller.adapters  # attention compares maps directly: no adapter
    adapter = pipeline.distiller.adapters["1"]
    assert isinstance(adapter, nn.Conv2d) and adapter.kernel_size == (1, 1)
    assert (adapter.in_channels, adapter.out_channels) == (4, 8)

    out = tmp_path / "run"
    code, _, err = kdistill("run", write_recipe(tmp_path / "cnn.yaml", raw), "--out", out, *set_args())
    assert code == 0, err
    models = by_role(read_report(out))
    assert set(models) == {"teacher", "distilled", "scratch"}
    assert all(0.0 <= model["metrics"]["accuracy"] <= 1.0 for model in models.values())
    parts = checkpoint.load(out / "checkpoints" / "distilled", "distilled")[2].loss
    assert set(parts[0]) == {"total", "task", "kd", "attention", "hint"}
    assert all(math.isfinite(value) and value >= 0 for epoch in parts for value in epoch.values())


# --- tasks --------------------------------------------------------------------------------------


def test_binary_task_reports_roc_auc(tmp_path, kdistill):
    out = tmp_path / "run"
    code, _, err = kdistill("run", "--out", out, *set_args(
        "task=binary", "data.dataset=breast_cancer", "losses={binary_kd: {}}", "weights={task: 0.1, binary_kd: 0.9}"))
    assert code == 0, err
    report = read_report(out)
    assert report["verdict"]["metric"] == "roc_auc"
    models = by_role(report)
    for model in models.values():
        assert list(model["metrics"]) == ["roc_auc", "accuracy"]
        assert 0.0 <= model["metrics"]["roc_auc"] <= 1.0
    assert models["teacher"]["metrics"]["roc_auc"] > 0.9  # breast cancer is easy even after 2 epochs
    assert 0.0 <= models["distilled"]["agreement"] <= 1.0


def test_ranking_task_reports_ndcg(tmp_path, kdistill):
    out = tmp_path / "run"
    code, _, err = kdistill("run", "--out", out, *set_args(
        "task=ranking", "data.dataset=synthetic_ranking", "data.transfer=null",
        "data.ranking={n_users: 40, n_items: 60, list_length: 20, positives: 5, dim: 4}",
        "teacher.model=user_item", "teacher.kwargs={embedding: 16, hidden: [32]}", "teacher.train.epochs=10",
        "student.model=user_item", "student.kwargs={embedding: 4, hidden: []}",
        "losses={listwise: {}, mse: {}}", "weights={task: 0.2, listwise: 0.5, mse: 0.3}"))
    assert code == 0, err
    report = read_report(out)
    assert report["verdict"]["metric"] == "ndcg@10"
    models = by_role(report)
    assert all(list(model["metrics"]) == ["ndcg@10"] and 0.0 < model["metrics"]["ndcg@10"] <= 1.0
               for model in models.values())
    assert models["distilled"]["parameters"] < models["teacher"]["parameters"]
    assert report["data"]["test"] == 40 and report["data"]["train"] == 4 * 40  # lists per user: 4 train, 1 test
    history = checkpoint.load(out / "checkpoints" / "teacher", "teacher")[2]
    teacher_loss = [epoch["task"] for epoch in history.loss]
    assert teacher_loss[-1] < teacher_loss[0]  # the teacher learned from the lists

    recipe = load_recipe(out / "recipe.yaml")
    data = load_task_data(recipe.data, recipe.task)
    student = load_model(out / "student.safetensors")
    scores = predict(student, torch.from_numpy(data.test.x), 256)
    assert scores.shape == data.test.y.shape == (40, 20)
    assert ndcg_at_k(scores, data.test.y) == models["distilled"]["metrics"]["ndcg@10"]


def test_regression_task_reports_rmse(tmp_path, regression_arrays, kdistill):
    out = tmp_path / "run"
    code, _, err = kdistill("run", "--out", out, *set_args(
        "task=regression", "data.dataset=arrays", f"data.path={regression_arrays}",
        "losses={mse: {}}", "weights={task: 0.5, mse: 0.5}", "teacher.train.epochs=20"))
    assert code == 0, err
    report = read_report(out)
    models = by_role(report)
    assert report["verdict"]["metric"] == "rmse"
    assert all(list(model["metrics"]) == ["rmse"] and model["agreement"] is None for model in models.values())
    y = np.load(regression_arrays)["y"]
    assert models["teacher"]["metrics"]["rmse"] < 0.5 * y.std()  # learned the linear map, not the mean
    distilled, scratch = models["distilled"]["metrics"]["rmse"], models["scratch"]["metrics"]["rmse"]
    assert report["verdict"]["helped"] == (distilled < scratch)  # lower rmse is better
