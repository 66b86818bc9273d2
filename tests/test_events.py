"""The training events: TensorBoard event files and MLflow metrics read back, no files without a
sink, and an import that pulls in no framework and no sink package."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from kdistill.errors import KdistillError
from kdistill.training.events import Events

EPOCHS = [
    ({"total": 1.5, "task": 1.0, "kd": 0.5}, {"accuracy": 0.5}, 2.0),
    ({"total": 1.25, "task": 0.75, "kd": 0.5}, {"accuracy": 0.75}, 1.5),
    ({"total": 0.5, "task": 0.25, "kd": 0.25}, {"accuracy": 0.875}, 1.25),
]


def expected() -> dict[str, list[float]]:
    """Tag -> the value at steps 1, 2, 3 (all exact in float32)."""
    tags: dict[str, list[float]] = {}
    for losses, metrics, seconds in EPOCHS:
        for term, value in losses.items():
            tags.setdefault(f"loss/{term}", []).append(value)
        for name, value in metrics.items():
            tags.setdefault(f"val/{name}", []).append(value)
        tags.setdefault("time/epoch_seconds", []).append(seconds)
    return tags


# TensorBoard's own reader, in a process of its own that tells it to use its TensorFlow stand-in:
# in this one it would import TensorFlow (seconds), or keep the stand-in for TensorFlow later
READ_SCALARS = """
import json, sys, types
sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
accumulator = EventAccumulator(sys.argv[1])
accumulator.Reload()
print(json.dumps({tag: [[event.step, event.value] for event in accumulator.Scalars(tag)]
                  for tag in accumulator.Tags()["scalars"]}))
"""


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Tag -> (step, value) of each scalar event that TensorBoard reads in ``logdir``."""
    out = subprocess.run([sys.executable, "-c", READ_SCALARS, str(logdir)], capture_output=True, text=True,
                         check=True).stdout
    return {tag: [tuple(event) for event in events] for tag, events in json.loads(out).items()}


def write(events: Events) -> None:
    for epoch, (losses, metrics, seconds) in enumerate(EPOCHS):
        events.epoch(epoch, losses, metrics, seconds)
    events.close()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard (the dev extra)")
def test_tensorboard_scalars_read_back(tmp_path):
    write(Events(tmp_path, "distilled", ["tensorboard"]))
    scalars = read_scalars(tmp_path / "logs/tensorboard/distilled")
    assert set(scalars) == {"loss/total", "loss/task", "loss/kd", "val/accuracy", "time/epoch_seconds"}
    for tag, values in expected().items():
        assert scalars[tag] == list(zip([1, 2, 3], values)), tag


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard (the dev extra)")
def test_tensorboard_flushes_each_epoch(tmp_path):
    events = Events(tmp_path, "teacher", ["tensorboard"])
    events.epoch(0, *EPOCHS[0])
    # read before close: what a killed run leaves
    assert read_scalars(tmp_path / "logs/tensorboard/teacher")["loss/kd"] == [(1, 0.5)]
    events.close()
    events.close()


def test_no_sink_writes_no_files(tmp_path):
    write(Events(tmp_path, "scratch", []))
    write(Events(None, "scratch", []))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sinks", [["tensorboard"], ["mlflow"]])
def test_sink_without_directory_is_an_error(sinks):
    with pytest.raises(KdistillError, match="needs a run directory"):
        Events(None, "distilled", sinks)


def test_unknown_sink_is_an_error(tmp_path):
    with pytest.raises(KdistillError, match="unknown sink"):
        Events(tmp_path, "distilled", ["wandb"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="needs mlflow (pip install mlflow)")
def test_mlflow_metrics_read_back(tmp_path):
    from mlflow import MlflowClient

    teacher = Events(tmp_path, "teacher", ["mlflow"])
    write(teacher)
    distilled = Events(tmp_path, "distilled", ["mlflow", "tensorboard"])
    write(distilled)

    tracking_uri = distilled._sinks[1].tracking_uri
    assert tracking_uri.startswith("sqlite:///") and (tmp_path / "logs/mlruns/mlflow.db").is_file()
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("kdistill")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == ["distilled", "teacher"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    for run in runs:
        for key, values in expected().items():
            history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda metric: metric.step)
            assert [(metric.step, metric.value) for metric in history] == list(zip([1, 2, 3], values)), key
    assert (tmp_path / "logs/tensorboard/distilled").is_dir()


def test_import_pulls_in_no_framework_and_no_sink():
    heavy = ["torch", "tensorflow", "jax", "tensorboard", "mlflow"]
    code = ("import sys, kdistill.training.events; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard (the dev extra)")
def test_tensorboard_writes_without_a_framework(tmp_path):
    code = ("import sys; from pathlib import Path; from kdistill.training.events import Events; "
            f"e = Events(Path({str(tmp_path)!r}), 'distilled', ['tensorboard']); "
            "e.epoch(0, {'total': 1.0}, {'accuracy': 0.5}, 1.0); e.close(); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert len(list((tmp_path / "logs/tensorboard/distilled").iterdir())) == 1


@pytest.mark.parametrize(("sink", "advice"), [("tensorboard", "pip install 'kdistill[log]'"),
                                              ("mlflow", "pip install mlflow")])
def test_missing_sink_package_is_an_error(tmp_path, monkeypatch, sink, advice):
    monkeypatch.setitem(sys.modules, sink, None)  # the import fails as when not installed
    with pytest.raises(KdistillError, match=f"'{sink}' needs the {sink} package") as error:
        Events(tmp_path, "distilled", ["tensorboard", "mlflow"])
    assert advice in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None or importlib.util.find_spec("torch") is None,
                    reason="needs tensorboard (the dev extra) and torch")
def test_a_run_with_train_log_tensorboard_writes_one_scalar_per_loss_term(tmp_path):
    import json as json_module

    from conftest import set_args
    from kdistill.cli import main

    assert main(["run", "--out", str(tmp_path), *set_args("train.log=tensorboard")]) == 0
    curves = {model["role"]: model["val_history"]
              for model in json_module.loads((tmp_path / "report.json").read_text())["models"]}
    for role, terms in (("teacher", ["total", "task"]), ("distilled", ["total", "task", "kd"]),
                        ("scratch", ["total", "task"])):
        scalars = read_scalars(tmp_path / "logs/tensorboard" / role)
        assert set(scalars) == {*(f"loss/{term}" for term in terms), "val/accuracy", "time/epoch_seconds"}, role
        assert all([step for step, _ in events] == [1, 2] for events in scalars.values()), role
        assert [value for _, value in scalars["val/accuracy"]] == pytest.approx(curves[role]), role
