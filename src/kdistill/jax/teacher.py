"""The teacher of a JAX run: built and checked first (abstract evaluation: nothing compiled), then
trained (or loaded from ``teacher.path``) and saved. The same object serves a JAX student online
and, for a student of another framework, the teacher that is cached to its store
(:mod:`kdistill.cross_framework`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from kdistill.backend_common import check_output_shape
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.jax.distiller import Distiller, eval_view, probe_shapes
from kdistill.jax.models import build_model, count_parameters, save_model
from kdistill.jax.trainer import fit, jitted_forward
from kdistill.recipe import Recipe
from kdistill.training import History


def check_outputs(model: nnx.Module, probe: jax.Array, data: TaskData, field: str) -> None:
    """The output width on a few rows must be the data's (abstract evaluation: nothing compiled)."""
    try:
        shape = tuple(probe_shapes(model, probe)[0].shape[1:])
    except Exception as error:  # the user's model rejected the data: say which and why
        raise KdistillError(f"{field}: forward pass on inputs {tuple(probe.shape[1:])} failed: {error}") from None
    check_output_shape(field, shape, data)


class Teacher:
    """``__init__`` builds the teacher on ``device`` with its own seed and checks it (nothing
    trained, compiled or written); :meth:`prepare` trains it there unless ``teacher.path`` gave
    trained weights."""

    def __init__(self, recipe: Recipe, data: TaskData, device: jax.Device):
        self.recipe, self.data, self.device = recipe, data, device
        with jax.default_device(device):
            self.model, self.spec = build_model(recipe.teacher, data, "teacher", recipe.teacher_training().seed)
            check_outputs(self.model, jnp.asarray(data.train.x[:4]), data, "teacher")
        self.parameters = count_parameters(self.model)

    def prepare(self, out: Path, checkpoints: Path, resume: bool) -> tuple[Path, History | None]:
        """Train (on resume, a finished teacher's checkpoint restores its parameters and history
        without training) and save to ``out/teacher.safetensors``, or take ``teacher.path``.
        Returns the weights file and the training history (None for a loaded teacher)."""
        if self.recipe.teacher.path is not None:
            return Path(self.recipe.teacher.path), None
        with jax.default_device(self.device):
            trainee = Distiller(self.model, self.recipe.task, {"task": 1.0})
            history = fit("teacher", trainee, self.data, self.recipe.teacher_training(), checkpoints / "teacher", resume)
        return save_model(self.model, self.spec, out / "teacher"), history

    def dlpack_forward(self) -> Callable[[Any], jax.Array]:
        """The teacher as it is now, frozen: ``x -> logits`` for any array that speaks DLPack (a
        torch tensor, say), taken without a copy where the device allows; one jitted eval-mode
        forward per batch shape."""
        graphdef, state = nnx.split(eval_view(self.model))
        return lambda x: jitted_forward(graphdef, state, jnp.from_dlpack(x))
