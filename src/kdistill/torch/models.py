"""Building, saving and loading PyTorch models: zoo names, ``pkg.module:factory`` import paths and
saved files.

A model kdistill saves is ``NAME.safetensors`` (weights) plus ``NAME.json`` (how to rebuild it:
factory and keyword arguments), so loading never unpickles code; the factory a sidecar names runs
only if it is a zoo model or the recipe names it (:func:`kdistill.backend_common.sidecar_factory`).
A ``.pt`` file holding a whole pickled module (``torch.save(model)``) is loaded only when trusted
(``trust_pickle``: unpickling runs whatever code the file holds); :func:`convert_pickle`
(``kdistill convert``) turns a trusted one into the two safe files once.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kdistill.backend_common import (
    build_from_factory,
    call_factory,
    read_sidecar,
    resolve_factory,
    sidecar_factory,
    trusted_factories,
    write_model_files,
)
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError, reading
from kdistill.recipe import ModelConfig
from kdistill.torch.zoo import ZOO

FORMAT = "kdistill.torch/1"
PICKLE = "a pickled torch model (.pt)"


def build_model(config: ModelConfig, data: TaskData, field: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model a recipe section describes, and the spec that rebuilds it (stored beside saved weights)."""
    if config.path is not None:
        model = load_model(config.path, field, factories=trusted_factories(config), trust_pickle=config.trust_pickle)
        return model, {"path": config.path}
    model, kwargs = build_from_factory(config.model, ZOO, dict(config.kwargs), data, field, nn.Module, "torch.nn.Module")
    return model, {"format": FORMAT, "model": config.model, "kwargs": kwargs}


def save_model(model: nn.Module, spec: dict[str, Any], stem: Path) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; returns the weights file."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    return write_model_files(stem, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}), spec)


def load_model(path: str | os.PathLike, field: str = "model", *, factories: Iterable[str] = (),
               trust_pickle: bool = False) -> nn.Module:
    """Load a kdistill-saved model (``.safetensors`` + ``.json``) or, with ``trust_pickle``, a
    pickled module (``.pt``). The sidecar's factory must be a zoo model or one of ``factories``
    (import paths you trust, e.g. the one you built the model with)."""
    path = Path(path)
    if not path.exists():
        raise KdistillError(f"{field}.path: {str(path)!r} does not exist")
    if path.suffix == ".pt":
        if not trust_pickle:
            raise KdistillError(
                f"{field}.path: {str(path)!r} is a pickled .pt file, and unpickling runs whatever code it holds, so "
                f"kdistill loads one only when told it is trusted: set {field}.trust_pickle: true (or pass "
                f"--trust-pickle), or convert it once: kdistill convert {path} --out NAME --model ZOO_NAME_OR_pkg.module:"
                "factory --kwargs '{...}' --trust-pickle, and give NAME.safetensors"
            )
        model = load_pickle(path, f"{field}.path")
        if not isinstance(model, nn.Module):
            raise KdistillError(f"{field}.path: {str(path)!r} holds {type(model).__name__}, not a whole torch.nn.Module "
                                "(for a state dict, kdistill convert rebuilds the module from a factory)")
        return model
    if path.suffix != ".safetensors" or not path.with_suffix(".json").exists():
        raise KdistillError(f"{field}.path: {str(path)!r} is neither NAME.safetensors with NAME.json beside it nor a .pt module")
    sidecar, spec = read_sidecar(path, FORMAT, field)
    factory = sidecar_factory(spec, sidecar, ZOO, "torch", field, factories)
    model = call_factory(factory, spec["model"], spec["kwargs"], None, model_field=f"{field}.path: {sidecar}",
                         kwargs_field=f"{field}.path: {sidecar}", model_type=nn.Module, type_name="torch.nn.Module")
    with reading(path, "a safetensors weights file", field=f"{field}.path"):
        state = load_file(str(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise KdistillError(f"{field}.path: weights in {str(path)!r} do not fit {spec['model']}: {error}") from None
    return model


def load_pickle(path: Path, field: str | None) -> Any:
    """Unpickle a trusted ``.pt`` file: only call this for a file the user marked as trusted."""
    with reading(path, PICKLE, field=field, also=(pickle.UnpicklingError, RuntimeError, AttributeError, ImportError)):
        return torch.load(path, map_location="cpu", weights_only=False)


def convert_pickle(source: Path, stem: Path, model: str, kwargs: dict[str, Any]) -> Path:
    """``kdistill convert``: load the trusted pickled ``source`` (a whole module or its state dict)
    into the factory ``model`` (zoo name or ``pkg.module:factory``) called with ``kwargs``, and
    write ``stem.safetensors`` + ``stem.json``, which kdistill loads without unpickling; returns
    the weights file. Existing files at ``stem`` are never replaced."""
    for existing in (stem.with_suffix(".safetensors"), stem.with_suffix(".json")):
        if existing.exists():
            raise KdistillError(f"--out: {existing} exists; kdistill convert never replaces a file, give another --out")
    loaded = load_pickle(source, None)
    state = loaded.state_dict() if isinstance(loaded, nn.Module) else loaded
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise KdistillError(f"{source}: holds {type(loaded).__name__}, neither a torch.nn.Module nor a state dict of tensors")
    rebuilt = call_factory(resolve_factory(model, ZOO, "convert", "--model"), model, kwargs, None, model_field="--model",
                           kwargs_field="--kwargs", model_type=nn.Module, type_name="torch.nn.Module")
    try:
        rebuilt.load_state_dict(state)
    except RuntimeError as error:
        raise KdistillError(f"--model: {model} with --kwargs {kwargs} does not fit the weights in {source}: {error}") from None
    return save_model(rebuilt, {"format": FORMAT, "model": model, "kwargs": kwargs}, stem)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
