"""Bad input through the CLI: every refusal exits 2 with one message that names the field and the
value, and never leaves an output directory that looks like a finished run."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from conftest import FAST, default_raw, requires_torch, set_args, write_recipe

from kdistill.recipe import load_recipe


def assert_refused(result: tuple[int, str, str], out: Path, *needles: str) -> str:
    """Exit code 2, one ``kdistill: error:`` message holding every needle, no finished run in ``out``."""
    code, _, err = result
    assert code == 2, err
    assert err.startswith("kdistill: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"
    assert not (out / "report.json").exists()
    assert not out.exists() or (out / "INCOMPLETE").exists()
    return err


# --- the recipe file and its fields (no training, no framework needed) -------------------------

UNREADABLE = {
    "binary": b"\xff\xfe\x00\x89PNG\r\n\x1a\n\x00\x00garbage",
    "invalid_yaml": b"teacher: [mlp, {\n  hidden: 3\n",
    "a_list": b"- backend: torch\n- task: classification\n",
    "empty": b"",
}


@pytest.mark.parametrize(("kind", "needle"), [
    ("binary", "is not readable YAML"),
    ("invalid_yaml", "is not readable YAML"),
    ("a_list", "expected a mapping of sections, got list"),
    ("empty", "expected a mapping of sections"),
    ("missing", "no such file and no built-in recipe of that name"),
    ("directory", "is not readable YAML"),
])
def test_unreadable_recipe(tmp_path, kdistill, kind, needle):
    recipe = tmp_path / f"{kind}.yaml"
    if kind == "directory":
        recipe.mkdir()
    elif kind != "missing":
        recipe.write_bytes(UNREADABLE[kind])
    out = tmp_path / "out"
    assert_refused(kdistill("run", recipe, "--out", out), out, str(recipe), needle)
    assert not out.exists()


@pytest.mark.parametrize(("assignment", "needles"), [
    ("losses.nope={}", ("losses.nope: unknown loss", "allowed: kd, soft_ce")),
    ("weights.kd=-0.5", ("weights.kd: -0.5 is negative",)),
    ("weights={task: 0, kd: 0}", ("weights: all weights are 0",)),
    ("train.temperature=0", ("train.temperature", "must be > 0, got 0")),
    ("train.temperature=-2", ("train.temperature", "must be > 0, got -2")),
    ("losses.kd.temperature=0", ("losses.kd.temperature: 0", "greater than 0")),
    ("losses.kd.alpha=2", ("losses.kd.alpha: 2", "kd takes temperature")),
    ("train.epoch=3", ("train.epoch: 3", "Extra inputs are not permitted")),
    ("train.epochs=0", ("train.epochs: 0",)),
    ("data.dataset=cifar", ("data.dataset: 'cifar'", "'digits'")),
    ("task=binary", ("losses.kd: not defined for task 'binary'", "binary_kd")),
    ("losses={kd: {}, hint: {}}", ("weights: no weight for loss hint",)),
    ("weights={task: 0.5, kd: 0.3, hint: 0.2}", ("weights.hint: no loss of that name in losses (kd)",)),
    (("losses={kd: {}, hint: {}}", "weights={task: 0.5, kd: 0.3, hint: 0.2}"),
     ("losses.hint: needs at least one features entry",)),
    ("losses={kd: {}, embedding: {metric: l1}}", ("losses.embedding.metric: 'l1'", "'mse' or 'cosine'")),
    ("losses.kd.metric=cosine", ("losses.kd.metric: cosine given, but kd takes temperature",)),
    ("features=[{student: fc1, teacher: fc1, loss: nope}]", ("features.0.loss: 'nope'", "'attention_kl'")),
    ("student.model='pkg.mod:'", ("student.model: 'pkg.mod:' is not an import path",)),
    ("data.dataset=arrays", ("data.path is required for dataset 'arrays'",)),
])
def test_invalid_recipe_field(tmp_path, kdistill, assignment, needles):
    """Each of these is caught by recipe validation alone."""
    out = tmp_path / "out"
    assignments = (assignment,) if isinstance(assignment, str) else assignment
    err = assert_refused(kdistill("run", "--out", out, *set_args(*assignments)), out, "invalid recipe", *needles)
    assert not out.exists()
    assert err.count("kdistill: error:") == 1


@pytest.mark.parametrize(("argv", "needles"), [
    (["--set", "train.epochs"], ("--set 'train.epochs': expected key=value",)),
    (["--set", "train.epochs=3", "--set", "train.epochs.x=1"], ("'epochs' is not a section",)),
    (["--set", "weights={task: 0.5, kd: 0.5} train.epochs=20"], ("the value is not valid YAML",)),
    (["--resume"], ("--resume needs the output directory",)),
])
def test_invalid_command_line(tmp_path, kdistill, monkeypatch, argv, needles):
    monkeypatch.chdir(tmp_path)  # a default output directory would land here
    assert_refused(kdistill("run", *argv), tmp_path / "runs", *needles)
    assert list(tmp_path.iterdir()) == []


def test_resume_of_a_missing_directory(tmp_path, kdistill):
    out = tmp_path / "never-ran"
    assert_refused(kdistill("run", "--out", out, "--resume", *set_args()), out, str(out), "nothing to resume")
    assert not out.exists()


def test_output_path_that_is_a_file(tmp_path, kdistill):
    out = tmp_path / "report.txt"
    out.write_text("mine")
    code, _, err = kdistill("run", "--out", out, *set_args())
    assert code == 2 and str(out) in err and "is not a directory" in err
    assert out.read_text() == "mine"


def test_missing_fashion_mnist(tmp_path, kdistill, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv("KDISTILL_DATA", raising=False)
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args("data.dataset=fashion_mnist", f"data.path={empty}")), out,
                   "fashion_mnist", str(empty), "(data.path)", "train-images-idx3-ubyte.gz",
                   "apt-get install dataset-fashion-mnist")
    assert not out.exists()


# --- models and features (built and checked before anything is written) ------------------------


def twelve_class_teacher(tmp_path: Path) -> Path:
    from kdistill.torch.models import FORMAT, save_model
    from kdistill.torch.zoo import mlp

    kwargs = {"input_shape": [64], "output_dim": 12, "hidden": [8]}
    return save_model(mlp(**kwargs), {"format": FORMAT, "model": "mlp", "kwargs": kwargs}, tmp_path / "teacher12")


@requires_torch
@pytest.mark.parametrize("source", ["saved_file", "factory"])
def test_teacher_with_another_class_count(tmp_path, kdistill, source):
    teacher = (f"teacher.path={twelve_class_teacher(tmp_path)}" if source == "saved_file"
               else "teacher={model: 'kd_factories:extra_classes', kwargs: {extra: 2}}")
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args(teacher)), out,
                   "teacher: outputs (12,) per sample", "digits (classification) needs (10,)")
    assert not out.exists()


@requires_torch
@pytest.mark.parametrize(("assignment", "needles"), [
    ("student={model: 'kd_factories:extra_classes'}", ("student: outputs (12,) per sample", "needs (10,)")),
    ("student.model=kd_factories:no_such_factory", ("student.model: module 'kd_factories'", "no callable 'no_such_factory'")),
    ("student.model=no_such_module:factory", ("student.model: cannot import module 'no_such_module'",)),
    ("student.model=resnet", ("student.model: 'resnet' is neither a zoo model (mlp, cnn, vit, user_item, transformer, text_mlp)",)),
    ("student.kwargs={width: 3}", ("student.kwargs: mlp rejected", "width")),
    ("student.model=cnn", ("model 'cnn' needs image inputs (C, H, W)", "(64,)")),
    ("teacher.path=missing.safetensors", ("teacher.path: 'missing.safetensors' does not exist",)),
])
def test_bad_model(tmp_path, kdistill, assignment, needles):
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args(assignment)), out, *needles)
    assert not out.exists()


HINT = ("losses={kd: {}, hint: {}}", "weights={task: 0.5, kd: 0.3, hint: 0.2}")


@requires_torch
@pytest.mark.parametrize(("pair", "needles"), [
    ("{student: fc9, teacher: fc2, loss: hint}",
     ("features.student: no layer 'fc9'", "available: flatten, fc1, relu1", "head")),
    ("{student: fc1, teacher: layer3.conv, loss: hint}",
     ("features.teacher: no layer 'layer3.conv'", "fc1", "fc2", "head")),
    ("{student: '', teacher: fc2, loss: hint}", ("features.student: no layer ''", "fc1")),
])
def test_bad_feature_layer_path(tmp_path, kdistill, pair, needles):
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args(*HINT, f"features=[{pair}]")), out, *needles)
    assert not out.exists()


@requires_torch
def test_attention_between_maps_of_different_sizes(tmp_path, kdistill, image_arrays):
    raw = default_raw() | {
        "data": {"dataset": "arrays", "path": str(image_arrays)},
        "teacher": {"model": "cnn", "kwargs": {"channels": [8, 16], "hidden": 32}},
        "student": {"model": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}},
        "losses": {"kd": {}, "attention": {}},
        "weights": {"task": 0.5, "kd": 0.3, "attention": 0.2},
        "features": [{"student": "conv1", "teacher": "conv2", "loss": "attention"}],
    }
    out = tmp_path / "out"
    assert_refused(kdistill("run", write_recipe(tmp_path / "cnn.yaml", raw), "--out", out, *set_args()), out,
                   "features.0: attention transfer needs equal spatial sizes", "(4, 8, 8)", "(16, 4, 4)")
    assert not out.exists()


# --- failures during training -----------------------------------------------------------------


@requires_torch
@pytest.mark.filterwarnings("error::UserWarning")
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, kdistill):
    import torch

    from kdistill.data import load_task_data
    from kdistill.torch.distiller import Distiller
    from kdistill.training import checkpoint
    from kd_factories import NanAfter

    recipe = load_recipe(None, list(FAST))
    data = load_task_data(recipe.data, recipe.task)
    steps = math.ceil(len(data.train) / recipe.train.batch_size)
    assert steps >= 3
    # the student's outputs turn NaN from its training step steps + 3: epoch 2, step 3
    out = tmp_path / "out"
    stem = out / "checkpoints" / "distilled"
    kept = out / "checkpoints" / "distilled.ckpt.safetensors"
    student = f"student={{model: 'kd_factories:nan_after', kwargs: {{steps: {steps + 2}}}}}"
    err = assert_refused(
        kdistill("run", "--out", out, *set_args(student)),
        out, "distilled: loss is not finite at epoch 2, step 3", "kd=nan", f"last good checkpoint kept at {kept}")
    assert "TrainingDiverged" in (out / "INCOMPLETE").read_text()
    assert not (out / "student.safetensors").exists()

    arrays, epoch, history = checkpoint.load(stem, "distilled")
    assert epoch == 0 and len(history.val) == 1
    student = NanAfter(data.input_shape, data.output_dim, steps=0)
    Distiller(student, "classification", {"task": 1.0}).load_state_dict(
        {name.removeprefix("model/"): torch.from_numpy(array) for name, array in arrays.items() if name.startswith("model/")})
    assert all(torch.isfinite(tensor).all() for tensor in student.state_dict().values())
    assert "epoch 2, step 3" in err


@requires_torch
def test_diverging_teacher_names_its_step_and_that_no_checkpoint_exists(tmp_path, kdistill):
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args("teacher.train.lr=1e30")), out,
                   "teacher: loss is not finite at epoch 1, step ", "no checkpoint had been written yet")
    assert list((out / "checkpoints").iterdir()) == []


@requires_torch
def test_resume_with_a_changed_student_is_refused(tmp_path, kdistill, monkeypatch):
    from kdistill.training import checkpoint

    save = checkpoint.save

    def interrupt_after_first_distilled_epoch(stem: Path, arrays, epoch: int, history) -> None:
        save(stem, arrays, epoch, history)
        if stem.name == "distilled":
            raise KeyboardInterrupt

    out = tmp_path / "out"
    monkeypatch.setattr(checkpoint, "save", interrupt_after_first_distilled_epoch)
    with pytest.raises(KeyboardInterrupt):
        kdistill("run", "--out", out, *set_args())
    monkeypatch.undo()
    for change, section in (("student.kwargs.hidden=[3]", "student"), ("train.lr=0.5", "train")):
        assert_refused(kdistill("run", "--out", out, "--resume", *set_args(change)), out,
                       "--resume: the recipe differs", f"section(s) {section}")
    assert (out / "checkpoints" / "distilled.ckpt.safetensors").exists()
    assert (out / "checkpoints" / "distilled.ckpt.json").exists()


# --- files planted among an interrupted run's checkpoints ---------------------------------------

SHORT = ("train.epochs=1", "teacher.train.epochs=1", "train.progress=false")


class TouchOnUnpickle:
    """A pickle payload: unpickling it creates ``marker`` (what a malicious checkpoint could run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """One finished tiny torch run (digits, one epoch each), copied by the tests that tamper with it."""
    pytest.importorskip("torch")
    from kdistill.cli import main

    out = tmp_path_factory.mktemp("short") / "run"
    assert main(["run", "--out", str(out), *set_args(*SHORT)]) == 0
    return out


def interrupted_copy(short_run: Path, out: Path) -> Path:
    """The finished run as an interrupted one: its report removed, its INCOMPLETE marker back."""
    shutil.copytree(short_run, out)
    (out / "report.json").unlink()
    (out / "INCOMPLETE").write_text("kdistill run in progress (or interrupted); report.json is written last\n")
    return out


@requires_torch
def test_resume_refuses_a_pickle_planted_in_checkpoints_without_unpickling_it(short_run, tmp_path, kdistill):
    import torch

    out = interrupted_copy(short_run, tmp_path / "run")
    marker = tmp_path / "unpickled"
    planted = out / "checkpoints" / "distilled.pt"
    torch.save(TouchOnUnpickle(marker), planted)
    before = {path.name: path.read_bytes() for path in (out / "checkpoints").iterdir()}

    err = assert_refused(kdistill("run", "--out", out, "--resume", *set_args(*SHORT)), out,
                         f"--resume: {planted} is not a kdistill checkpoint", "distilled.pt", "never unpickles")
    assert err.count("kdistill: error:") == 1
    assert not marker.exists()  # refused by name, never opened
    assert {path.name: path.read_bytes() for path in (out / "checkpoints").iterdir()} == before  # nothing trained
    assert (out / "student.safetensors").read_bytes() == (short_run / "student.safetensors").read_bytes()

    torch.load(planted, weights_only=False)  # the planted file is armed: unpickling it does create the marker
    assert marker.exists()


@requires_torch
@pytest.mark.parametrize("content", ["text", "pickle"])
def test_resume_refuses_a_checkpoint_that_is_not_safetensors_by_name(short_run, tmp_path, kdistill, content):
    import torch

    out = interrupted_copy(short_run, tmp_path / "run")
    marker = tmp_path / "unpickled"
    damaged = out / "checkpoints" / "distilled.ckpt.safetensors"
    if content == "text":
        damaged.write_text("these are not the tensors you are looking for\n")
    else:  # a pickle under the checkpoint's own name
        torch.save(TouchOnUnpickle(marker), damaged)

    err = assert_refused(kdistill("run", "--out", out, "--resume", *set_args(*SHORT)), out,
                         f"--resume: distilled checkpoint {damaged} is damaged or not a kdistill checkpoint")
    assert err.count("kdistill: error:") == 1
    assert not marker.exists()
    assert not (out / "report.json").exists()
