"""Building, saving and loading Flax NNX models: zoo names, ``pkg.module:factory`` import paths and
saved files.

A model kdistill saves is ``NAME.safetensors`` (its ``nnx.Param`` arrays, keyed by the dotted
state path such as ``fc1.kernel``) plus ``NAME.json`` (factory and keyword arguments), so loading
rebuilds the module and never unpickles code. A factory that takes ``seed`` (every zoo model) or
``rngs`` gets the recipe's seed: initial weights depend on the seed alone.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from kdistill.backend_common import (
    build_from_factory,
    call_factory,
    read_sidecar,
    sidecar_factory,
    trusted_factories,
    write_model_files,
)
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError, reading
from kdistill.jax.zoo import ZOO
from kdistill.recipe import ModelConfig

FORMAT = "kdistill.jax/1"


def build_model(config: ModelConfig, data: TaskData, field: str, seed: int) -> tuple[nnx.Module, dict[str, Any]]:
    """The model a recipe section describes, and the spec that rebuilds it (stored beside saved weights)."""
    if config.path is not None:
        return load_model(config.path, field, factories=trusted_factories(config)), {"path": config.path}
    model, kwargs = build_from_factory(config.model, ZOO, dict(config.kwargs), data, field, nnx.Module, "flax.nnx.Module",
                                       lambda factory, kwargs: _instantiate(factory, kwargs, seed), seed=seed)
    return model, {"format": FORMAT, "model": config.model, "kwargs": kwargs}


def _instantiate(factory, kwargs: dict[str, Any], seed: int) -> Any:
    """Call the factory, giving ``rngs=nnx.Rngs(seed)`` to one that asks for it (not JSON: not in the spec)."""
    wants_rngs = "rngs" in inspect.signature(factory).parameters and "rngs" not in kwargs
    return factory(**kwargs, **({"rngs": nnx.Rngs(seed)} if wants_rngs else {}))


def _named_params(model: nnx.Module) -> dict[str, nnx.Variable]:
    return {".".join(map(str, path)): variable for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def save_model(model: nnx.Module, spec: dict[str, Any], stem: Path) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; returns the weights file."""
    arrays = {name: np.ascontiguousarray(jax.device_get(variable[...])) for name, variable in _named_params(model).items()}
    return write_model_files(stem, lambda tmp: save_file(arrays, tmp, metadata={"format": FORMAT}), spec)


def load_model(path: str | os.PathLike, field: str = "model", *, factories: Iterable[str] = ()) -> nnx.Module:
    """Load a model kdistill saved (``NAME.safetensors`` with ``NAME.json`` beside it). The
    sidecar's factory must be a zoo model or one of ``factories`` (import paths you trust, e.g. the
    one you built the model with)."""
    path = Path(path)
    if not path.exists():
        raise KdistillError(f"{field}.path: {str(path)!r} does not exist")
    if path.suffix != ".safetensors" or not path.with_suffix(".json").exists():
        raise KdistillError(f"{field}.path: {str(path)!r} is not NAME.safetensors with NAME.json beside it")
    sidecar, spec = read_sidecar(path, FORMAT, field)
    factory = sidecar_factory(spec, sidecar, ZOO, "jax", field, factories)
    seed = spec["kwargs"].get("seed", 0)
    model = call_factory(factory, spec["model"], spec["kwargs"], lambda factory, kwargs: _instantiate(factory, kwargs, seed),
                         model_field=f"{field}.path: {sidecar}", kwargs_field=f"{field}.path: {sidecar}",
                         model_type=nnx.Module, type_name="flax.nnx.Module")
    with reading(path, "a safetensors weights file", field=f"{field}.path"):
        stored = load_file(str(path))
    params = _named_params(model)
    mismatched = sorted(name for name in stored.keys() | params.keys()
                        if name not in stored or name not in params or stored[name].shape != params[name].shape)
    if mismatched:
        raise KdistillError(f"{field}.path: weights in {str(path)!r} do not fit {spec['model']}: {', '.join(mismatched)}")
    for name, variable in params.items():
        variable[...] = jax.numpy.asarray(stored[name])
    return model


def count_parameters(model: nnx.Module) -> int:
    return sum(math.prod(variable.shape) for variable in _named_params(model).values())
