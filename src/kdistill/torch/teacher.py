"""The teacher of a PyTorch run: built and checked first, then trained (or loaded from
``teacher.path``), saved and frozen. The same object serves a PyTorch student online and, for a
student of another framework, the teacher that is cached to its store (:mod:`kdistill.cross_framework`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kdistill.backend_common import check_output_shape
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import Recipe
from kdistill.torch import distributed
from kdistill.torch.distiller import Distiller
from kdistill.torch.models import build_model, count_parameters, save_model
from kdistill.torch.trainer import fit, tensors
from kdistill.training import History


def probe_rows(data: TaskData, device: torch.device) -> torch.Tensor:
    """A few training inputs on ``device``: what the output checks run on."""
    return tensors(data.train.take(np.arange(min(4, len(data.train)))), device)[0]


def check_outputs(model: torch.nn.Module, probe: torch.Tensor, data: TaskData, field: str) -> None:
    """One eval-mode forward on ``probe``: the model must take the data and give ``(output_dim,)``."""
    model.eval()
    try:
        with torch.no_grad():
            shape = tuple(model(probe).shape[1:])
    except Exception as error:  # the user's model rejected the data: say which and why
        raise KdistillError(f"{field}: forward pass on inputs {tuple(probe.shape[1:])} failed: {error}") from None
    check_output_shape(field, shape, data)


class Teacher:
    """``__init__`` builds the teacher with its own seed and checks it (nothing trained or
    written); :meth:`prepare` trains it unless ``teacher.path`` gave trained weights."""

    def __init__(self, recipe: Recipe, data: TaskData, device: torch.device, probe: torch.Tensor):
        self.recipe, self.data, self.device = recipe, data, device
        torch.manual_seed(recipe.teacher_training().seed)
        self.model, self.spec = build_model(recipe.teacher, data, "teacher")
        self.model.to(device)
        check_outputs(self.model, probe, data, "teacher")
        self.parameters = count_parameters(self.model)

    def prepare(self, out: Path, checkpoints: Path, resume: bool) -> tuple[Path, History | None]:
        """Train (on resume, a finished teacher's checkpoint restores its weights and history
        without training) and save to ``out/teacher.safetensors``, or take ``teacher.path``; then
        freeze. Returns the weights file and the training history (None for a loaded teacher)."""
        teacher_file, history = out / "teacher.safetensors", None
        if self.recipe.teacher.path is not None:
            teacher_file = Path(self.recipe.teacher.path)
        else:
            trainee = Distiller(self.model.train(), self.recipe.task, {"task": 1.0})
            self.model.requires_grad_(True)
            history = fit("teacher", trainee, self.data, self.recipe.teacher_training(), self.device,
                          checkpoints / "teacher.pt", resume, augment=self.recipe.data.augment)
            if distributed.is_main_process():
                save_model(self.model, self.spec, out / "teacher")
        self.model.requires_grad_(False).eval()
        return teacher_file, history
