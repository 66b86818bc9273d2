"""Building, saving and loading PyTorch models: zoo names, ``pkg.module:factory`` import paths and
saved files.

A model kdistill saves is ``NAME.safetensors`` (weights) plus ``NAME.json`` (how to rebuild it:
factory and keyword arguments), so loading never unpickles code. A ``.pt`` file holding a whole
pickled module (``torch.save(model)``) is loaded too, for trusted files only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kdistill.backend_common import build_from_factory, resolve_factory, write_model_files
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import ModelConfig
from kdistill.torch.zoo import ZOO

FORMAT = "kdistill.torch/1"


def build_model(config: ModelConfig, data: TaskData, field: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model a recipe section describes, and the spec that rebuilds it (stored beside saved weights)."""
    if config.path is not None:
        return load_model(config.path, field), {"path": config.path}
    model, kwargs = build_from_factory(config.model, ZOO, dict(config.kwargs), data, field, nn.Module, "torch.nn.Module")
    return model, {"format": FORMAT, "model": config.model, "kwargs": kwargs}


def save_model(model: nn.Module, spec: dict[str, Any], stem: Path) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; returns the weights file."""
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    return write_model_files(stem, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}), spec)


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
    model = resolve_factory(spec["model"], ZOO, field)(**spec["kwargs"])
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as error:
        raise KdistillError(f"{field}.path: weights in {str(path)!r} do not fit {spec['model']}: {error}") from None
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
