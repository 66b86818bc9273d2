"""ONNX, LiteRT and SavedModel from a ``keras.Model``: Keras 3's own ``Model.export`` (ONNX through
tf2onnx on TensorFlow, jax2onnx on JAX, torch.onnx on torch; LiteRT through the TFLite converter,
whose ``optimizations`` and ``target_spec`` quantize it), with a batch dimension of ``None``."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from kdistill.errors import KdistillError
from kdistill.export.litert import converter_options
from kdistill.export.quiet import quiet

KERAS_FORMAT = {"onnx": "onnx", "tflite": "litert", "savedmodel": "tf_saved_model"}


def export(model: keras.Model, format: str, path: Path, example: np.ndarray, quantize: str | None = None) -> None:
    """``model``'s inference call in ``format`` at ``path`` (a file; a directory for savedmodel)."""
    model(example[:1], training=False)  # a subclassed model has its weights and input shape now
    signature = [keras.InputSpec(shape=(None, *example.shape[1:]), dtype=str(example.dtype), name="inputs")]
    try:
        with quiet():
            model.export(str(path), format=KERAS_FORMAT[format], verbose=False, input_signature=signature,
                         **(converter_options(quantize) if format == "tflite" else {}))
    except Exception as error:
        layer = _first_failing_layer(model, error)
        raise KdistillError(f"--format {format}: Keras cannot export {model.name} ({type(model).__name__}): "
                            f"{layer or str(error).splitlines()[0]}") from None


def _first_failing_layer(model: keras.Model, error: Exception) -> str | None:
    """The layer an export error names (Keras and TensorFlow name the layer in their messages)."""
    message = str(error)
    for layer in getattr(model, "layers", []):
        if layer.name in message:
            return f"layer {layer.name} ({type(layer).__name__}): {message.splitlines()[0]}"
    return None
