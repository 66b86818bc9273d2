"""Feature distillation without editing models: forward hooks on layers named by module path,
and the learnable adapters that map student features to the teacher's width (FitNets' hint
adapters; TinyBERT's projection of hidden states)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdistill.errors import KdistillError


class FeatureTap:
    """Records the outputs of the named submodules at every forward pass of ``model``.

    ``tap.outputs[path]`` holds the latest activation (a module that returns a tuple: its first
    element, or with ``attention`` its second, a transformer attention layer's probabilities);
    paths are ``model.named_modules()`` names (``fc1``, ``layer3.1.conv2``,
    ``encoder.encoder.layer.2``). A path that does not exist is an error listing the names."""

    def __init__(self, model: nn.Module, paths: Sequence[str], field: str, attention: Sequence[str] = ()):
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in paths:
            if path not in modules or path == "":
                names = ", ".join(name for name in modules if name)
                raise KdistillError(f"{field}: no layer {path!r} in {type(model).__name__}; available: {names}")
            self._handles.append(modules[path].register_forward_hook(self._recorder(path, path in attention, field)))

    def _recorder(self, path: str, attention: bool, field: str):
        def record(_module, _inputs, output):
            if not attention:
                self.outputs[path] = output[0] if isinstance(output, (tuple, list)) else output
                return
            probabilities = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if probabilities is None:
                raise KdistillError(f"{field}: layer {path!r} gives no attention probabilities; name a transformer's "
                                    "attention layer (encoder.encoder.layer.K.attention.self)")
            self.outputs[path] = probabilities
        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def make_projection(student_feature: torch.Tensor, teacher_feature: torch.Tensor, field: str) -> nn.Module:
    """The learned W of ``hidden_mse``: hidden states (B, L, H_s) → (B, L, H_t), a linear map per token."""
    s_shape, t_shape = tuple(student_feature.shape[1:]), tuple(teacher_feature.shape[1:])
    if len(s_shape) != 2 or len(t_shape) != 2 or s_shape[0] != t_shape[0]:
        raise KdistillError(f"{field}: hidden_mse maps hidden states (tokens, hidden) of equal token counts; got "
                            f"student {s_shape} and teacher {t_shape}")
    return nn.Linear(s_shape[1], t_shape[1])


def make_adapter(student_feature: torch.Tensor, teacher_feature: torch.Tensor, field: str) -> nn.Module:
    """Linear map for (B, C) features, 1×1 convolution for (B, C, H, W): student width → teacher width."""
    s_shape, t_shape = tuple(student_feature.shape[1:]), tuple(teacher_feature.shape[1:])
    if len(s_shape) != len(t_shape) or s_shape[1:] != t_shape[1:]:
        raise KdistillError(
            f"{field}: student feature {s_shape} and teacher feature {t_shape} differ beyond the channel axis; "
            "pick layers with the same spatial size"
        )
    if len(s_shape) == 1:
        return nn.Linear(s_shape[0], t_shape[0])
    if len(s_shape) == 3:
        return nn.Conv2d(s_shape[0], t_shape[0], kernel_size=1)
    raise KdistillError(f"{field}: hint adapters support (B, C) and (B, C, H, W) features, got (B, {s_shape})")
