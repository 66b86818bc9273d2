"""Exports of a Flax NNX module's eval-mode forward, its batch dimension symbolic.

- ONNX: ``jax2onnx.to_onnx`` converts the jaxpr primitive by primitive (the way Keras 3 exports its
  own JAX models); jax2tf's non-native lowering, which tf2onnx needed, is gone from JAX.
- TensorFlow SavedModel: ``jax2tf.convert`` (native serialization: the StableHLO module inside a
  ``tf.function`` with a polymorphic batch) saved with a ``serve`` endpoint, as Keras writes one.
- LiteRT: TensorFlow's TFLite converter on that function, with its own post-training quantization.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from kdistill.errors import KdistillError
from kdistill.export.litert import converter_options
from kdistill.export.quiet import quiet
from kdistill.jax.distiller import eval_view

INPUT, OUTPUT = "inputs", "logits"


def export(model: nnx.Module, format: str, path: Path, example: np.ndarray, quantize: str | None = None) -> None:
    """``model`` in eval mode in ``format`` at ``path`` (a directory for savedmodel): input
    ``inputs`` (batch, *shape)."""
    graphdef, state = nnx.split(eval_view(model))

    def forward(x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(x)

    try:
        with quiet():
            if format == "onnx":
                _onnx(forward, path, example, type(model).__name__)
            else:
                _tensorflow(forward, format, path, example, quantize)
    except Exception as error:
        tool = "jax2onnx" if format == "onnx" else "jax2tf"
        raise KdistillError(f"--format {format}: {tool} cannot convert {type(model).__name__}: "
                            f"{str(error).splitlines()[0]}") from None


def _onnx(forward, path: Path, example: np.ndarray, name: str) -> None:
    from jax2onnx import to_onnx

    spec = jax.ShapeDtypeStruct(("batch", *example.shape[1:]), example.dtype)
    to_onnx(forward, inputs=[spec], input_names=[INPUT], output_names=[OUTPUT], model_name=name,
            return_mode="file", output_path=str(path))


def _tensorflow(forward, format: str, path: Path, example: np.ndarray, quantize: str | None) -> None:
    import tensorflow as tf
    from jax.experimental import jax2tf

    batch = "(b, " + ", ".join(str(size) for size in example.shape[1:]) + ")"
    serve = tf.function(jax2tf.convert(forward, polymorphic_shapes=[batch]), autograph=False,
                        input_signature=[tf.TensorSpec([None, *example.shape[1:]], tf.as_dtype(example.dtype), name=INPUT)])
    if format == "tflite":
        converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
        for option, value in converter_options(quantize).items():
            if option == "target_spec":
                converter.target_spec.supported_types = value["supported_types"]
            else:
                setattr(converter, option, value)
        path.write_bytes(converter.convert())
        return
    module = tf.Module()
    module.serve = serve
    shutil.rmtree(path, ignore_errors=True)
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve.get_concrete_function()})
