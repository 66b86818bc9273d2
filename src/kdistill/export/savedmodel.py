"""TensorFlow SavedModels in TensorFlow: the ``serve`` endpoint Keras writes, as ``x -> outputs``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> outputs`` of the SavedModel folder ``path`` (TensorFlow's own thread pools:
    ``threads`` is not set per model)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda x: loaded.serve(x).numpy()


def signature(path: Path) -> dict:
    """The ``serve`` endpoint's input and output: name, shape (None: dynamic) and type."""
    import tensorflow as tf

    function = tf.saved_model.load(str(path)).signatures["serving_default"]
    (given,) = function.structured_input_signature[1].values()
    (name, out), = function.structured_outputs.items()
    return {"input": {"name": given.name, "shape": given.shape.as_list(), "type": given.dtype.name},
            "output": {"name": name, "shape": out.shape.as_list(), "type": out.dtype.name}}
