"""Building, saving and loading PyTorch models: zoo names, ``pkg.module:factory`` import paths and
saved files.

A model kdistill saves is ``NAME.safetensors`` (weights) plus ``NAME.json`` (how to rebuild it:
factory and keyword arguments), so loading never unpickles code. A ``.pt`` file holding a whole
pickled module (``torch.save(model)``) is loaded too, for trusted files only.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import ModelConfig
from kdistill.torch.zoo import ZOO

FORMAT = "kdistill.torch/1"


def _factory(name: str, field: str):
    if name in ZOO:
        return ZOO[name]
    if ":" not in name:
        raise KdistillError(f"{field}.model: {name!r} is neither a zoo model ({', '.join(ZOO)}) nor 'pkg.module:factory'")
    module_name, attribute = name.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise KdistillError(f"{field}.model: cannot import module {module_name!r}: {error}") from None
    if not callable(getattr(module, attribute, None)):
        raise KdistillError(f"{field}.model: module {module_name!r} has no callable {attribute!r}")
    return getattr(module, attribute)


def _call_kwargs(factory, kwargs: dict[str, Any], data: TaskData) -> dict[str, Any]:
    """The factory's keyword arguments: the recipe's, plus the data facts it asks for by name
    (``input_shape``, ``output_dim``, and any ``data.meta`` key such as ``n_users``)."""
    known = {"input_shape": list(data.input_shape), "output_dim": data.output_dim, **data.meta}
    accepted = inspect.signature(factory).parameters
    return {**{key: value for key, value in known.items() if key in accepted and key not in kwargs}, **kwargs}


def build_model(config: ModelConfig, data: TaskData, field: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model a recipe section describes, and the spec that rebuilds it (stored beside saved weights)."""
    if config.path is not None:
        return load_model(config.path, field), {"path": config.path}
    factory = _factory(config.model, field)
    kwargs = _call_kwargs(factory, dict(config.kwargs), data)
    try:
        model = factory(**kwargs)
    except TypeError as error:
        raise KdistillError(f"{field}.kwargs: {config.model} rejected {kwargs}: {error}") from None
    if not isinstance(model, nn.Module):
        raise KdistillError(f"{field}.model: {config.model} returned {type(model).__name__}, not a torch.nn.Module")
    return model, {"format": FORMAT, "model": config.model, "kwargs": kwargs}


def save_model(model: nn.Module, spec: dict[str, Any], stem: Path) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; returns the weights file."""
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    for path, write in ((weights, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT})),
                        (sidecar, lambda tmp: Path(tmp).write_text(json.dumps(spec, indent=2)))):
        tmp = path.with_name(path.name + ".tmp")
        write(str(tmp))
        os.replace(tmp, path)
    return weights


def load_model(path: str | os.PathLike, field: str = "model") -> nn.Module:
    """Load a kdistill-saved model (``.safetensors`` + ``.json``) or a pickled module (``.pt``)."""
    path = Path(path)
    if not path.exists():
        raise KdistillError(f"{field}.path: {str(path)!r} does not exist")
    if path.suffix == ".pt":
        model = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(model, nn.Module):
            raise KdistillError(f"{field}.path: {str(path)!r} holds {type(model).__name__}, not a whole torch.nn.Module")
        return model
    sidecar = path.with_suffix(".json")
    if path.suffix != ".safetensors" or not sidecar.exists():
        raise KdistillError(f"{field}.path: {str(path)!r} is neither NAME.safetensors with NAME.json beside it nor a .pt module")
    spec = json.loads(sidecar.read_text())
    if spec.get("format") != FORMAT:
        raise KdistillError(f"{field}.path: {str(sidecar)!r} has format {spec.get('format')!r}, expected {FORMAT!r}")
    model = _factory(spec["model"], field)(**spec["kwargs"])
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as error:
        raise KdistillError(f"{field}.path: weights in {str(path)!r} do not fit {spec['model']}: {error}") from None
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
