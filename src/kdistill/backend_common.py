"""What every backend shares around its model files, framework-free: finding a factory by recipe
name and calling it with the data facts it asks for, and writing a saved model's two files."""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError



def resolve_factory(name: str, zoo: Mapping[str, Callable], field: str) -> Callable:
    """A zoo model by name, or a callable named ``pkg.module:factory``."""
    if name in zoo:
        return zoo[name]
    if ":" not in name:
        raise KdistillError(f"{field}.model: {name!r} is neither a zoo model ({', '.join(zoo)}) nor 'pkg.module:factory'")
    module_name, attribute = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise KdistillError(f"{field}.model: cannot import module {module_name!r}: {error}") from None
    if not callable(getattr(module, attribute, None)):
        raise KdistillError(f"{field}.model: module {module_name!r} has no callable {attribute!r}")
    return getattr(module, attribute)


def factory_kwargs(factory: Callable, kwargs: dict[str, Any], data: TaskData, **facts: Any) -> dict[str, Any]:
    """The factory's keyword arguments: the recipe's, plus the data facts it asks for by name
    (``input_shape``, ``output_dim``, any ``data.meta`` key such as ``n_users``, and ``facts``)."""
    known = {"input_shape": list(data.input_shape), "output_dim": data.output_dim, **data.meta, **facts}
    accepted = inspect.signature(factory).parameters
    return {**{key: value for key, value in known.items() if key in accepted and key not in kwargs}, **kwargs}


def build_from_factory(config_model: str, zoo: Mapping[str, Callable], kwargs: dict[str, Any], data: TaskData,
                       field: str, model_type: type, type_name: str,
                       call: Callable[[Callable, dict[str, Any]], Any] | None = None,
                       **facts: Any) -> tuple[Any, dict[str, Any]]:
    """The model of a recipe's ``model``/``kwargs`` (a zoo name or ``pkg.module:factory``) and the
    keyword arguments it was built with; ``call(factory, kwargs)`` builds it (default: a plain
    call). A factory that rejects its arguments or returns no ``model_type`` is a named error."""
    factory = resolve_factory(config_model, zoo, field)
    kwargs = factory_kwargs(factory, kwargs, data, **facts)
    try:
        model = factory(**kwargs) if call is None else call(factory, kwargs)
    except TypeError as error:
        raise KdistillError(f"{field}.kwargs: {config_model} rejected {kwargs}: {error}") from None
    if not isinstance(model, model_type):
        raise KdistillError(f"{field}.model: {config_model} returned {type(model).__name__}, not a {type_name}")
    return model, kwargs


def write_model_files(stem: Path, write_weights: Callable[[str], object], spec: dict[str, Any]) -> Path:
    """``stem.safetensors`` (written by ``write_weights(path)``) and ``stem.json`` (the spec that
    rebuilds the model), each written to a temporary name and renamed; returns the weights file."""
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for path, write in ((weights, write_weights), (sidecar, lambda tmp: Path(tmp).write_text(json.dumps(spec, indent=2)))):
        tmp = path.with_name(path.name + ".tmp")
        write(str(tmp))
        os.replace(tmp, path)
    return weights
