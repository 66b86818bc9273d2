"""Finding a model factory by recipe name and calling it with the data facts it asks for: shared
by every backend's ``models`` module (each passes its own zoo)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
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
