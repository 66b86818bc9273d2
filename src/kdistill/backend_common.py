"""What every backend shares around its model files, framework-free: finding a factory by recipe
name and calling it with the data facts it asks for, and writing and reading a saved model's two
files.

A saved model's sidecar (``NAME.json``) names the factory that rebuilds it. The sidecar is data,
so the factory it names runs only if it is the backend's zoo model or the import path the recipe
itself gives in that model's section (:func:`sidecar_factory`): the recipe is the trust decision.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError, reading, writing


def resolve_factory(name: str, zoo: Mapping[str, Callable], field: str, option: str | None = None) -> Callable:
    """A zoo model by name, or a callable named ``pkg.module:factory``; errors name ``field.model``
    (or the command-line ``option``)."""
    where = option or f"{field}.model"
    if name in zoo:
        return zoo[name]
    if ":" not in name:
        raise KdistillError(f"{where}: {name!r} is neither a zoo model ({', '.join(zoo)}) nor 'pkg.module:factory'")
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError) as error:  # ValueError: an empty or relative module name
        raise KdistillError(f"{where}: cannot import module {module_name!r}: {error}") from None
    if not callable(getattr(module, attribute, None)):
        raise KdistillError(f"{where}: module {module_name!r} has no callable {attribute!r}")
    return getattr(module, attribute)


def factory_kwargs(factory: Callable, kwargs: dict[str, Any], data: TaskData, **facts: Any) -> dict[str, Any]:
    """The factory's keyword arguments: the recipe's, plus the data facts it asks for by name
    (``input_shape``, ``input_dtype`` such as ``"int32"``, ``output_dim``, any ``data.meta`` key such as
    ``n_users``, and ``facts``)."""
    known = {"input_shape": list(data.input_shape), "input_dtype": str(data.train.x.dtype), "output_dim": data.output_dim,
             **data.meta, **facts}
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
    model = call_factory(factory, config_model, kwargs, call, model_field=f"{field}.model",
                         kwargs_field=f"{field}.kwargs", model_type=model_type, type_name=type_name)
    return model, kwargs


def call_factory(factory: Callable, name: str, kwargs: dict[str, Any],
                 call: Callable[[Callable, dict[str, Any]], Any] | None, *, model_field: str, kwargs_field: str,
                 model_type: type, type_name: str) -> Any:
    """``factory(**kwargs)`` (or ``call(factory, kwargs)``) as a model of ``model_type``: a factory
    that rejects its arguments is named by ``kwargs_field``; one that raises, or returns something
    else, by ``model_field`` (e.g. ``teacher.model``, or a sidecar's path)."""
    try:
        model = factory(**kwargs) if call is None else call(factory, kwargs)
    except KdistillError:
        raise
    except TypeError as error:
        raise KdistillError(f"{kwargs_field}: {name} rejected {kwargs}: {error}") from None
    except Exception as error:  # the factory's own failure, not kdistill's: named, without a traceback
        raise KdistillError(f"{model_field}: the factory {name} raised {type(error).__name__}: {error}") from None
    if not isinstance(model, model_type):
        raise KdistillError(f"{model_field}: {name} returned {type(model).__name__}, not a {type_name}")
    return model


def trusted_factories(config: Any) -> tuple[str, ...]:
    """The import paths a saved model's sidecar may name for the recipe section ``config`` (a
    :class:`kdistill.recipe.ModelConfig`): the one the section names itself, if any."""
    return (config.model,) if config.model and ":" in config.model else ()


def read_sidecar(weights: Path, expected_format: str, field: str) -> tuple[Path, dict[str, Any]]:
    """The sidecar ``NAME.json`` of ``weights`` and its spec: ``format``, ``model`` (a factory's
    name) and ``kwargs``; a file that is not such JSON is a named error."""
    sidecar = weights.with_suffix(".json")
    with reading(sidecar, "a kdistill model sidecar (JSON)", field=f"{field}.path"):
        spec = json.loads(sidecar.read_text())
    if not isinstance(spec, dict) or spec.get("format") != expected_format:
        found = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise KdistillError(f"{field}.path: {str(sidecar)!r} has format {found!r}, expected {expected_format!r}")
    if not isinstance(spec.get("model"), str) or not isinstance(spec.get("kwargs", {}), dict):
        raise KdistillError(f"{field}.path: {str(sidecar)!r} must give 'model' (a factory's name) and 'kwargs' "
                            f"(a mapping); it has model {spec.get('model')!r}, kwargs {spec.get('kwargs')!r}")
    return sidecar, {"kwargs": {}, **spec}


def sidecar_factory(spec: dict[str, Any], sidecar: Path, zoo: Mapping[str, Callable], framework: str, field: str,
                    trusted: Iterable[str]) -> Callable:
    """The factory a sidecar names: a ``framework`` zoo model, or an import path in ``trusted``
    (:func:`trusted_factories`). Any other is refused before its module is imported: a model file
    someone hands over must not run code the recipe did not ask for."""
    name = spec["model"]
    if name in zoo:
        return zoo[name]
    if name not in set(trusted):
        raise KdistillError(
            f"{field}.path: {str(sidecar)!r} names the factory {name!r}, which is not a {framework} zoo model "
            f"({', '.join(zoo)}); kdistill runs the factory a model file names only when the recipe names it too: "
            f"if you trust that code, set {field}.model: '{name}' beside {field}.path"
        )
    return resolve_factory(name, zoo, field)


def write_model_files(stem: Path, write_weights: Callable[[str], object], spec: dict[str, Any]) -> Path:
    """``stem.safetensors`` (written by ``write_weights(path)``) and ``stem.json`` (the spec that
    rebuilds the model), each written to a temporary name and renamed; returns the weights file."""
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for path, write in ((weights, write_weights), (sidecar, lambda tmp: Path(tmp).write_text(json.dumps(spec, indent=2)))):
        replace_with(path, path.with_name(path.name + ".tmp"), lambda tmp: write(str(tmp)))
    return weights


def replace_with(path: Path, tmp: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)``, then rename ``tmp`` to ``path``: ``path`` is whole or as it was. A failed
    write (a full disk) removes ``tmp`` and is a named error naming ``path``."""
    with writing(path, "this file"):
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
