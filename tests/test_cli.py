"""`kdistill run` end to end: the five outputs, determinism, resume, refusing a finished run,
and `import kdistill` staying free of deep-learning frameworks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from matplotlib.image import imread

from conftest import by_role, read_report, requires_torch, set_args

from kdistill.data import load_task_data
from kdistill.recipe import Recipe, load_recipe
from kdistill.report.metrics import task_metrics

ROLES = ("teacher", "distilled", "scratch")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def learned(report: dict) -> dict:
    """What a run learned, without its timings: per role, test metrics, validation curve and agreement."""
    return {model["role"]: (model["metrics"], model["val_history"], model["agreement"]) for model in report["models"]}


def same_weights(first: Path, second: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(first)), load_file(str(second))
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@requires_torch
def test_run_writes_the_five_outputs(default_run):
    out = default_run
    assert not (out / "INCOMPLETE").exists()
    for name in ("report.md", "report.json", "curves.png", "student.safetensors", "student.json", "recipe.yaml"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes().startswith(PNG_SIGNATURE)
    height, width, channels = imread(out / "curves.png").shape
    assert height > 100 and width > 100 and channels in (3, 4)

    report = read_report(out)
    assert report["task"] == "classification" and report["recipe"] == "digits_mlp"
    models = by_role(report)
    assert [model["role"] for model in report["models"]] == list(ROLES)
    for role in ROLES:
        model = models[role]
        assert 0.0 <= model["metrics"]["accuracy"] <= 1.0
        assert model["parameters"] > 0 and model["size_bytes"] > 0
        assert set(model["latency_ms"]) == {"batch_1", "batch_32", "batch_256"}
        assert all(value > 0 for value in model["latency_ms"].values())
        assert len(model["val_history"]) == 2  # one validation score per epoch (FAST: 2 epochs)
    assert models["teacher"]["agreement"] is None
    assert 0.0 <= models["distilled"]["agreement"] <= 1.0 and 0.0 <= models["scratch"]["agreement"] <= 1.0
    assert models["distilled"]["parameters"] == models["scratch"]["parameters"] < models["teacher"]["parameters"]
    assert models["distilled"]["size_bytes"] == (out / "student.safetensors").stat().st_size
    accuracy = {role: models[role]["metrics"]["accuracy"] for role in ROLES}
    assert report["verdict"]["metric"] == "accuracy"
    assert report["verdict"]["helped"] == (accuracy["distilled"] > accuracy["scratch"])
    assert report["verdict"]["text"].startswith("Distillation helped" if report["verdict"]["helped"] else "Distillation did not help")

    markdown = (out / "report.md").read_text()
    assert report["verdict"]["text"] in markdown
    assert all(f"| {role} |" in markdown for role in ROLES)

    resolved = Recipe.model_validate(yaml.safe_load((out / "recipe.yaml").read_text()))
    assert resolved.train.epochs == 2 and resolved.teacher.train.epochs == 2 and resolved.train.progress is False


@requires_torch
def test_saved_student_reloads_and_reproduces_the_reported_accuracy(default_run):
    import torch

    from kdistill.torch.backend import predict
    from kdistill.torch.models import count_parameters, load_model

    out = default_run
    student = load_model(out / "student.safetensors")
    recipe = Recipe.model_validate(yaml.safe_load((out / "recipe.yaml").read_text()))
    data = load_task_data(recipe.data, recipe.task)
    outputs = predict(student, torch.from_numpy(data.test.x), 256)
    reported = by_role(read_report(out))["distilled"]
    assert task_metrics("classification", outputs, data.test.y) == reported["metrics"]
    assert count_parameters(student) == reported["parameters"]


@requires_torch
def test_same_seed_same_run_in_another_process_and_other_seed_differs(default_run, tmp_path, kdistill):
    again = tmp_path / "again"
    done = subprocess.run([sys.executable, "-m", "kdistill", "run", "--out", str(again), *set_args()],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"report: {again / 'report.md'}" in done.stdout
    assert learned(read_report(again)) == learned(read_report(default_run))
    assert (again / "student.safetensors").read_bytes() == (default_run / "student.safetensors").read_bytes()
    assert same_weights(again / "teacher.safetensors", default_run / "teacher.safetensors")

    other = tmp_path / "other"
    assert kdistill("run", "--out", other, *set_args("train.seed=1"))[0] == 0
    assert not same_weights(other / "student.safetensors", default_run / "student.safetensors")
    assert not same_weights(other / "teacher.safetensors", default_run / "teacher.safetensors")
    assert learned(read_report(other)) != learned(read_report(default_run))


@requires_torch
def test_interrupted_run_resumes_to_the_same_student_bit_for_bit(tmp_path, kdistill, monkeypatch):
    from kdistill.training import checkpoint

    four = set_args("train.epochs=4", "student.kwargs.dropout=0.2")  # dropout: its masks must resume too
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert kdistill("run", "--out", whole, *four)[0] == 0

    save = checkpoint.save

    def interrupt_after_second_distilled_epoch(stem: Path, arrays, epoch: int, history) -> None:
        save(stem, arrays, epoch, history)
        if stem.name == "distilled" and epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", interrupt_after_second_distilled_epoch)
    with pytest.raises(KeyboardInterrupt):
        kdistill("run", "--out", broken, *four)
    monkeypatch.undo()
    marker = (broken / "INCOMPLETE").read_text()
    assert "KeyboardInterrupt" in marker and "--resume" in marker
    assert not (broken / "report.json").exists() and not (broken / "student.safetensors").exists()
    assert checkpoint.load(broken / "checkpoints" / "distilled", "distilled")[1] == 1
    assert sorted(path.name for path in (broken / "checkpoints").iterdir()) == [
        "distilled.ckpt.json", "distilled.ckpt.safetensors", "teacher.ckpt.json", "teacher.ckpt.safetensors"]

    code, _, err = kdistill("run", "--out", broken, "--resume", *four)
    assert code == 0, err
    assert not (broken / "INCOMPLETE").exists()
    assert (broken / "student.safetensors").read_bytes() == (whole / "student.safetensors").read_bytes()
    assert same_weights(broken / "checkpoints" / "scratch.safetensors", whole / "checkpoints" / "scratch.safetensors")
    assert learned(read_report(broken)) == learned(read_report(whole))
    assert len(by_role(read_report(broken))["distilled"]["val_history"]) == 4


@requires_torch
def test_finished_run_is_refused_without_overwrite_and_replaced_with_it(default_run, tmp_path, kdistill):
    out = tmp_path / "finished"
    shutil.copytree(default_run, out)
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}

    code, _, err = kdistill("run", "--out", out, *set_args("train.seed=1"))
    assert code == 2
    assert str(out) in err and "already holds a finished run" in err and "--overwrite" in err
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before

    code, _, err = kdistill("run", "--out", out, "--overwrite", *set_args("train.seed=1"))
    assert code == 0, err
    assert not (out / "INCOMPLETE").exists()
    assert (out / "student.safetensors").read_bytes() != before["student.safetensors"]
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["seed"] == 1


def test_validate_prints_the_resolved_recipe(kdistill):
    code, out, _ = kdistill("validate", *set_args("train.lr=0.01"))
    assert code == 0
    recipe = Recipe.model_validate(yaml.safe_load(out))
    assert recipe.train.lr == 0.01 and recipe.train.epochs == 2 and recipe.weights == load_recipe().weights


def test_import_kdistill_imports_no_deep_learning_framework():
    code = (
        "import sys, kdistill, kdistill.cli, kdistill.run, kdistill.data, kdistill.report.write\n"
        "frameworks = ('torch', 'tensorflow', 'keras', 'jax', 'flax', 'optax')\n"
        "print(sorted(name for name in frameworks if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_subprocess_reports_a_user_error_without_traceback(tmp_path):
    argv = [sys.executable, "-m", "kdistill", "run", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "kdistill: error: recipe" in done.stderr and "missing.yaml" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_recipes_lists_the_built_in_default(kdistill):
    code, out, _ = kdistill("recipes")
    assert code == 0 and "digits_mlp" in out.split()
