"""Building, saving and loading Keras models: zoo names, ``pkg.module:factory`` import paths and
``.keras`` files (Keras's own format: architecture, weights and no pickled code)."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from kdistill.backend_common import build_from_factory, replace_with
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError, reading
from kdistill.keras.zoo import ZOO
from kdistill.recipe import ModelConfig


def build_model(config: ModelConfig, data: TaskData, field: str) -> keras.Model:
    """The model a recipe section describes: a saved ``.keras`` file, or a factory called with the
    recipe's kwargs plus the data facts it asks for by name (``input_shape``, ``output_dim``, ...)."""
    if config.path is not None:
        return load_model(config.path, field)
    return build_from_factory(config.model, ZOO, dict(config.kwargs), data, field, keras.Model, "keras.Model")[0]


def save_model(model: keras.Model, path: Path) -> Path:
    """Write ``path`` (a ``.keras`` file) atomically; returns it."""
    replace_with(path, path.with_name(path.stem + ".tmp.keras"), model.save)
    return path


def load_model(path: str | os.PathLike, field: str = "model") -> keras.Model:
    """Load a ``.keras`` model file (custom layers must be registered with Keras)."""
    path = Path(path)
    if not path.exists():
        raise KdistillError(f"{field}.path: {str(path)!r} does not exist")
    if path.suffix != ".keras":
        raise KdistillError(f"{field}.path: {str(path)!r} is not a .keras file (the Keras backend saves and loads .keras)")
    with reading(path, "a .keras model file Keras can load", field=f"{field}.path", also=(TypeError,)):
        return keras.models.load_model(path)  # safe mode: no lambda or other code in the file is run
