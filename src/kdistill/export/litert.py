"""LiteRT (TFLite) flatbuffers in the LiteRT interpreter (``ai-edge-litert``) as ``x -> outputs``,
resized to each batch size it is given (the file's batch dimension is dynamic)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> first output`` of ``path`` in the LiteRT interpreter with ``threads`` threads
    (None: the interpreter's default)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    (given, *_), (out, *_) = interpreter.get_input_details(), interpreter.get_output_details()
    shape: list[tuple[int, ...]] = [()]

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape != shape[0]:
            interpreter.resize_tensor_input(given["index"], list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(given["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    return run


def signature(path: Path) -> dict:
    """The file's first input and output: name, shape (-1: dynamic) and type."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (given, *_), (out, *_) = interpreter.get_input_details(), interpreter.get_output_details()
    return {side: {"name": detail["name"], "shape": detail["shape_signature"].tolist(), "type": str(detail["dtype"].__name__)}
            for side, detail in (("input", given), ("output", out))}


def converter_options(quantize: str | None) -> dict:
    """The TFLite converter's post-training quantization, as its attributes: float16 weights, or
    dynamic-range int8 (int8 weights, activations quantized on the fly)."""
    if quantize is None:
        return {}
    import tensorflow as tf

    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    return options | ({"target_spec": {"supported_types": [tf.float16]}} if quantize == "float16" else {})
