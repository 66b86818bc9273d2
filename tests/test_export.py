"""kdistill export: ONNX from every backend and LiteRT/SavedModel from Keras and JAX, each run in its real
runtime (onnxruntime, the LiteRT interpreter, TensorFlow) against the framework's outputs on the
test split; quantized files with their accuracy change; and the named errors of a bad request."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import read_report, set_args
from kdistill.cli import main

ONE_EPOCH = ("train.epochs=1", "teacher.train.epochs=1", "compare.scratch=false")


def _run(tmp_path_factory, backend: str, *assignments: str) -> Path:
    """A finished one-epoch run of the default digits recipe on ``backend``."""
    pytest.importorskip({"torch": "torch", "keras": "keras", "jax": "flax"}[backend])
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp(backend) / "run"
    assert main(["run", "--out", str(out), *set_args(*ONE_EPOCH, f"backend={backend}", *assignments)]) == 0
    return out


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory) -> Path:
    """Exported by ``kdistill run`` itself (output.export), int8 beside the float32 file."""
    return _run(tmp_path_factory, "torch", "output.export=[onnx]", "output.quantize=[int8]")


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory, "keras")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory, "jax")


def _rows(directory: Path) -> dict[tuple[str, str, str], dict]:
    return {(row["role"], row["format"], row["precision"]): row for row in read_report(directory)["deploy"]["rows"]}


def _finished(directory: Path) -> list[str]:
    """The export files with their sidecar (finished), and no partial file anywhere."""
    names = sorted(path.name for path in (directory / "export").iterdir())
    assert not [name for name in names if name.startswith(".partial-")], names
    return [name for name in names if not name.endswith(".json") and f"{name}.json" in names]


def _check_onnx(directory: Path, role: str = "distilled", stem: str = "student") -> None:
    """The ONNX file runs in onnxruntime at any batch size, carries the class names and the
    preprocessing, and matched the framework on the test split within 1e-5 relative."""
    import onnxruntime

    path = directory / "export" / f"{stem}.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    given = session.get_inputs()[0]
    for batch in (1, 7):
        out = session.run(None, {given.name: np.random.default_rng(0).random((batch, 64), np.float32)})[0]
        assert out.shape == (batch, 10)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["kdistill.classes"]) == [str(digit) for digit in range(10)]
    assert "divided by 16" in json.loads(meta["kdistill.preprocessing"])["description"]
    sidecar = json.loads((path.parent / f"{path.name}.json").read_text())
    check = _rows(directory)[(role, "onnx", "float32")]["verification"]
    assert sidecar["verification"] == check
    assert check["samples"] == read_report(directory)["data"]["test"]
    assert check["relative"] <= 1e-5 and check["agreement"] == 1.0 and check["change"] == 0.0
    row = _rows(directory)[(role, "onnx", "float32")]
    assert row["size_bytes"] == path.stat().st_size
    assert set(row["latency_ms"]) == {"threads_1", "threads_all"} and set(row["framework_latency_ms"]) == {"batch_1", "batch_32", "batch_256"}


def test_run_exports_onnx_of_torch_models_verified_and_quantized(torch_run):
    assert _finished(torch_run) == ["student.int8.onnx", "student.onnx", "teacher.int8.onnx", "teacher.onnx"]
    _check_onnx(torch_run)
    _check_onnx(torch_run, "teacher", "teacher")
    int8 = _rows(torch_run)[("distilled", "onnx", "int8")]
    check = int8["verification"]
    assert check["change"] == pytest.approx(check["metrics"]["accuracy"] - check["framework_metrics"]["accuracy"])
    assert check["tolerance"] is None and check["max_abs"] > 0  # int8 changes the logits: reported, not refused
    assert int8["size_bytes"] < _rows(torch_run)[("distilled", "onnx", "float32")]["size_bytes"]
    markdown = (torch_run / "report.md").read_text()
    assert "## Deploy" in markdown and "| distilled | onnx | int8 |" in markdown


@pytest.mark.parametrize("backend", ["keras", "jax"])
def test_kdistill_export_onnx_matches_the_framework(backend, request, kdistill):
    directory = request.getfixturevalue(f"{backend}_run")
    code, out, err = kdistill("export", directory, "--format", "onnx", "--role", "student")
    assert code == 0, err
    assert "export/student.onnx: distilled float32, max |Δlogit|" in out
    assert _finished(directory) == ["student.onnx"]
    _check_onnx(directory)


@pytest.mark.parametrize("backend", ["keras", "jax"])
def test_litert_and_savedmodel_with_quantized_accuracy_change(backend, request, kdistill):
    from ai_edge_litert.interpreter import Interpreter

    run_dir = request.getfixturevalue(f"{backend}_run")
    code, _, err = kdistill("export", run_dir, "--format", "tflite", "savedmodel", "--quantize", "int8", "float16",
                            "--role", "student")
    assert code == 0, err
    assert {"student.tflite", "student.int8.tflite", "student.float16.tflite", "student.savedmodel"} <= set(_finished(run_dir))
    rows = _rows(run_dir)
    assert rows[("distilled", "tflite", "float32")]["verification"]["relative"] <= 1e-5
    assert rows[("distilled", "savedmodel", "float32")]["verification"]["relative"] <= 1e-5
    for precision in ("int8", "float16"):
        check = rows[("distilled", "tflite", precision)]["verification"]
        assert check["change"] == pytest.approx(check["metrics"]["accuracy"] - check["framework_metrics"]["accuracy"])
        assert rows[("distilled", "tflite", precision)]["size_bytes"] < rows[("distilled", "tflite", "float32")]["size_bytes"]
    interpreter = Interpreter(model_path=str(run_dir / "export" / "student.tflite"))
    assert interpreter.get_input_details()[0]["shape_signature"].tolist() == [-1, 64]  # dynamic batch


def test_verification_beyond_tolerance_is_named_and_leaves_no_file(torch_run, kdistill):
    before = _finished(torch_run)
    code, _, err = kdistill("export", torch_run, "--format", "onnx", "--quantize", "float16", "--role", "student",
                            "--tolerance", "float16=0")
    assert code == 2
    assert "student.float16.onnx: the float16 onnx export of the student" in err and "the tolerance 0:" in err
    assert "relative difference" in err and "the file was removed" in err
    assert not (torch_run / "export" / "student.float16.onnx").exists()
    assert _finished(torch_run) == before  # the float32 file, verified again, is finished as before


@pytest.mark.parametrize("args, needle", [
    (["--format", "tflite"], "--format: tflite is exported from backend(s) keras, jax, not 'torch'"),
    (["--format", "savedmodel", "--quantize", "int8"], "--format: savedmodel is exported from backend(s) keras, jax"),
    (["--format", "onnx", "--role", "scratch"], "--role scratch: this run has no scratch model"),
    (["--format", "onnx", "--tolerance", "float32=x"], "--tolerance: 'float32=x' is not PRECISION=NUMBER"),
])
def test_a_request_the_run_cannot_serve_is_named(torch_run, kdistill, args, needle):
    before = _finished(torch_run)
    code, _, err = kdistill("export", torch_run, *args)
    assert code == 2 and needle in err, err
    assert _finished(torch_run) == before


def test_bad_run_directories_are_named(tmp_path, torch_run, kdistill):
    code, _, err = kdistill("export", tmp_path / "missing", "--format", "onnx")
    assert code == 2 and "is not a directory" in err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text((torch_run / "recipe.yaml").read_text())
    (unfinished / "INCOMPLETE").write_text("kdistill run in progress\n")
    code, _, err = kdistill("export", unfinished, "--format", "onnx")
    assert code == 2 and "is not a finished kdistill run" in err
    assert not (unfinished / "export").exists()


def test_a_model_the_exporter_cannot_trace_is_named_by_its_layer(tmp_path):
    torch = pytest.importorskip("torch")
    from kdistill import backends
    from kdistill.errors import KdistillError

    class Gate(torch.nn.Module):
        """Data-dependent control flow: no graph holds both branches."""

        def forward(self, x):
            return x if x.sum() > 0 else -x

    model = torch.nn.Sequential(torch.nn.Linear(64, 8), Gate(), torch.nn.Linear(8, 3))
    with pytest.raises(KdistillError, match=r"cannot trace the model: layer 1 \(Gate: .*data-dependent"):
        backends.load("torch").export(model, "onnx", tmp_path / "gate.onnx", np.ones((4, 64), np.float32))
    assert not (tmp_path / "gate.onnx").exists()


def test_each_latency_turn_is_timed_warm_and_turns_reverse_on_alternate_repeats():
    """A forward is timed on the second of two calls in a row, so a model is not timed reloading
    what the model before it evicted: here a call after another model's sleeps 20 ms, and no
    median comes out that slow; and the turns run in reverse order on alternate repeats."""
    import time

    from kdistill.report.latency import WARMUP_ROUNDS, measure_latencies

    calls: list[tuple[str, int]] = []

    def forward(role: str):
        def run(size: int) -> None:
            if calls and calls[-1][0] != role:
                time.sleep(0.02)  # cold: another model ran last
            calls.append((role, size))
        return run

    medians = measure_latencies({"teacher": forward("teacher"), "student": forward("student")}, (1, 2), repeats=3)
    assert all(value < 10 for by_size in medians.values() for value in by_size.values())
    turns = [calls[index] for index in range(0, len(calls), 2)]
    assert calls[1::2] == turns  # every turn: the same call twice in a row
    per_repeat = [turns[index:index + 4] for index in range(0, len(turns), 4)]
    assert len(per_repeat) == 3 + WARMUP_ROUNDS and per_repeat[1] == per_repeat[0][::-1]
