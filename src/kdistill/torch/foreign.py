"""A teacher of another framework, run per batch for a PyTorch student (``teacher.online``): the
batch goes to the teacher's framework and the logits come back by DLPack, without a copy where
both frameworks share the device (CPU and CUDA for JAX; a host copy where one side cannot)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.training import History


class ForeignModule(nn.Module):
    """A frozen foreign teacher as a ``torch.nn.Module`` (no parameters of its own): ``forward``
    hands the batch over by DLPack and takes the logits back the same way."""

    def __init__(self, teacher: Any):
        super().__init__()
        self._teacher = teacher  # the framework's Teacher (kdistill.jax.teacher / kdistill.keras.teacher)
        self._call: Callable[[Any], Any] | None = None

    def refresh(self) -> None:
        """Take the teacher's current weights (after it trained) on the next call."""
        self._call = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._call is None:
            self._call = self._teacher.dlpack_forward()
        return torch.from_dlpack(self._call(x.detach().contiguous()))


class OnlineForeignTeacher:
    """What a torch pipeline needs of its teacher (``model``, ``parameters``, ``prepare``) for a
    teacher trained and run in another framework."""

    def __init__(self, teacher: Any):
        self.teacher = teacher
        self.model = ForeignModule(teacher)
        self.parameters = teacher.parameters

    def prepare(self, out: Path, checkpoints: Path, resume: bool) -> tuple[Path, History | None]:
        """Train (or load) the teacher in its framework, then run the trained weights per batch."""
        prepared = self.teacher.prepare(out, checkpoints, resume)
        self.model.refresh()
        return prepared
