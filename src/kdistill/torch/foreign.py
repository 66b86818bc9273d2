"""A teacher of another framework, run on the fly for a PyTorch student (``teacher.online``).

The trainer works an epoch's batches out ahead, so the teacher is asked once per chunk of steps
(:data:`kdistill.training.CHECK_EVERY`) for the outputs of exactly the samples and augmented
views the student will see in them; the inputs go to the teacher's framework and the logits come
back by DLPack, without a copy where both frameworks allow it (JAX on the CPU or a GPU;
TensorFlow copies inputs in, as it takes only 64-byte aligned memory). One call per chunk rather
than per step keeps two frameworks' thread pools from taking turns on the cores at every step.
Nothing is cached: every epoch's fresh views reach the teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdistill.data.augment import augment as augment_views
from kdistill.data.samples import concatenate
from kdistill.data.splits import TaskData
from kdistill.recipe import AugmentConfig
from kdistill.training import History


class ForeignModule(nn.Module):
    """A frozen foreign teacher as a ``torch.nn.Module`` (no parameters of its own), for measuring
    it beside the student: ``forward`` hands the batch over by DLPack and takes the logits back."""

    def __init__(self, teacher: Any):
        super().__init__()
        self._teacher = teacher  # a kdistill.teacher.Teacher of a backend with the dlpack_teacher capability
        self._call: Callable[[Any], Any] | None = None

    def refresh(self) -> None:
        """Take the teacher's current weights (after it trained) on the next call."""
        self._call = None

    def logits(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The teacher's logits for ``x`` (anything that speaks DLPack) as a torch tensor."""
        if self._call is None:
            self._call = self._teacher.dlpack_forward()
        return torch.from_dlpack(self._call(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x.detach().contiguous())


class OnlineForeignTeacher:
    """What a torch pipeline needs of its teacher (``model``, ``parameters``, ``prepare``) for a
    teacher trained and run in another framework, plus the per-chunk outputs the trainer reads."""

    def __init__(self, teacher: Any):
        self.teacher = teacher
        self.model = ForeignModule(teacher)
        self.parameters = teacher.parameters

    def prepare(self, out: Path, checkpoints: Path, resume: bool) -> tuple[Path, History | None]:
        """Train (or load) the teacher in its framework, then run the trained weights."""
        prepared = self.teacher.prepare(out, checkpoints, resume)
        self.model.refresh()
        return prepared

    def outputs(self, data: TaskData, augment: AugmentConfig | None,
                batch_size: int) -> Callable[[np.ndarray, np.ndarray | None], torch.Tensor]:
        """``(sample ids, view ids) -> logits`` over the training and transfer samples, each at
        the view the student gets (:func:`kdistill.data.augment.augment`), run ``batch_size`` rows
        at a time: what :func:`kdistill.training.loop.fit` reads like a store's ``fetch``."""
        splits = [split for split in (data.train, data.transfer) if split is not None]
        ids, x = np.concatenate([split.ids for split in splits]), concatenate([split.x for split in splits])
        order = np.argsort(ids)

        def teacher_outputs(batch_ids: np.ndarray, views: np.ndarray | None) -> torch.Tensor:
            inputs = x[order[np.searchsorted(ids, batch_ids, sorter=order)]]
            if views is not None:
                inputs = augment_views(inputs, batch_ids, views, augment)
            return torch.cat([self.model.logits(np.ascontiguousarray(inputs[start:start + batch_size]))
                              for start in range(0, len(inputs), batch_size)])

        return teacher_outputs
