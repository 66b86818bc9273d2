"""ONNX from a Flax NNX module: ``jax2onnx.to_onnx`` on the module's eval-mode forward, its batch
dimension symbolic. jax2onnx converts the jaxpr primitive by primitive (the way Keras 3 exports
its own JAX models); jax2tf's non-native lowering, which tf2onnx needed, is gone from JAX."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import nnx

from kdistill.errors import KdistillError
from kdistill.export.quiet import quiet
from kdistill.jax.distiller import eval_view

INPUT, OUTPUT = "inputs", "logits"


def export(model: nnx.Module, format: str, path: Path, example: np.ndarray) -> None:
    """``model`` in eval mode as ONNX at ``path``: input ``inputs`` (batch, *shape), output ``logits``."""
    from jax2onnx import to_onnx

    graphdef, state = nnx.split(eval_view(model))

    def forward(x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state)(x)

    spec = jax.ShapeDtypeStruct(("batch", *example.shape[1:]), example.dtype)
    try:
        with quiet():
            to_onnx(forward, inputs=[spec], input_names=[INPUT], output_names=[OUTPUT], model_name=type(model).__name__,
                    return_mode="file", output_path=str(path))
    except Exception as error:
        raise KdistillError(f"--format onnx: jax2onnx cannot convert {type(model).__name__}: "
                            f"{str(error).splitlines()[0]}") from None
