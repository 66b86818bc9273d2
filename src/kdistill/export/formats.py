"""The export formats, their file names and runtimes, and the precisions an export may take;
which backend writes which format is a registry capability (:mod:`kdistill.backends`)."""

from __future__ import annotations

from dataclasses import dataclass

from kdistill import backends
from kdistill.errors import KdistillError


@dataclass(frozen=True)
class Format:
    """``name`` (the CLI's and recipe's), the registry capability that writes it, the suffix of
    its file (a directory for ``savedmodel`` and ``hf``), the runtime that verifies and times it, and the
    precisions it can be quantized to."""

    name: str
    capability: str
    suffix: str
    runtime: str
    precisions: tuple[str, ...]


FORMATS: dict[str, Format] = {fmt.name: fmt for fmt in (
    Format("onnx", backends.EXPORT_ONNX, ".onnx", "onnxruntime", ("float32", "float16", "int8")),
    Format("tflite", backends.EXPORT_TFLITE, ".tflite", "LiteRT", ("float32", "float16", "int8")),
    Format("savedmodel", backends.EXPORT_SAVEDMODEL, ".savedmodel", "TensorFlow", ("float32",)),
    Format("hf", backends.EXPORT_HF, ".hf", "transformers", ("float32",)),
)}
QUANTIZED = ("float16", "int8")
TOLERANCE: dict[str, float | None] = {"float32": 1e-5, "float16": 1e-2, "int8": None}
"""The largest relative logit difference (:func:`kdistill.export.verify.compare`) an export of
each precision may have; None: reported, not checked (dynamic int8 changes logits by design and
is judged by its accuracy change)."""


def check_format(backend: str, name: str, field: str = "--format") -> Format:
    """The format ``name`` for a model of ``backend``; an unknown format, or one that backend does
    not write, is a named error."""
    if name not in FORMATS:
        raise KdistillError(f"{field}: {name!r} is not an export format; allowed: {', '.join(FORMATS)}")
    fmt = FORMATS[name]
    if not backends.supports(backend, fmt.capability):
        able = ", ".join(backends.with_capability(fmt.capability))
        raise KdistillError(f"{field}: {name} is exported from backend(s) {able}, not {backend!r}")
    return fmt


def check_quantize(fmt: Format, precision: str, field: str = "--quantize") -> None:
    """``precision`` is one the format can be quantized to."""
    if precision not in QUANTIZED:
        raise KdistillError(f"{field}: {precision!r} is not a quantization; allowed: {', '.join(QUANTIZED)}")
    if precision not in fmt.precisions:
        raise KdistillError(f"{field}: {fmt.name} is exported in {', '.join(fmt.precisions)} only, not {precision}")


def file_name(stem: str, fmt: Format, precision: str) -> str:
    """``student.onnx``, ``student.int8.onnx``, ``teacher.float16.tflite``, ``student.savedmodel``, ``student.hf``."""
    return f"{stem}{'' if precision == 'float32' else '.' + precision}{fmt.suffix}"
