"""The teacher of a run, in any backend: built with its own seed and checked first (nothing
trained or written), then trained in the one loop (or loaded from ``teacher.path``), saved and
frozen. The same object teaches a student of its own framework online and, for a student of
another framework, is the teacher cached to its store (:mod:`kdistill.cross_framework`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdistill.backends.contract import Backend
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.objective import Objective
from kdistill.ranks import is_main_process
from kdistill.recipe import Recipe
from kdistill.store.cache import Predict
from kdistill.training import History
from kdistill.training.loop import fit


def probe_rows(data: TaskData) -> np.ndarray:
    """A few training inputs: what the output checks run on."""
    return np.ascontiguousarray(data.train.x[:min(4, len(data.train))])


def check_outputs(backend: Backend, model: Any, probe: np.ndarray, data: TaskData, field: str, device: Any) -> None:
    """One inference forward on ``probe``: the model must take the data and give ``(output_dim,)``."""
    try:
        shape = backend.output_shape(model, probe, device)
    except Exception as error:  # the user's model rejected the data: say which and why
        raise KdistillError(f"{field}: forward pass on inputs {tuple(probe.shape[1:])} failed: {error}") from None
    expected = (data.output_dim,)
    if tuple(shape) != expected:
        raise KdistillError(f"{field}: outputs {tuple(shape)} per sample, but {data.name} ({data.task}) needs {expected}")


class Teacher:
    """``__init__`` builds the teacher and checks it; :meth:`prepare` trains it unless
    ``teacher.path`` gave a trained model."""

    def __init__(self, recipe: Recipe, data: TaskData, backend: Backend, device: Any):
        self.recipe, self.data, self.backend, self.device = recipe, data, backend, device
        self.training = recipe.teacher_training()
        with backend.scope(device, self.training):
            self.model, self.spec = backend.build(recipe.teacher, data, "teacher", self.training.seed, device)
            check_outputs(backend, self.model, probe_rows(data), data, "teacher", device)
        self.parameters = backend.count_parameters(self.model)

    def prepare(self, out: Path, checkpoints: Path, resume: bool) -> tuple[Path | None, History | None]:
        """Train (on resume, a finished teacher's checkpoint restores its weights and history
        without training) and save beside the run (``out/teacher.*``), or take ``teacher.path``,
        or (``teacher.train.epochs: 0``) save it as built; then freeze. Returns the model file and
        the training history (None for a teacher not trained here)."""
        backend, recipe = self.backend, self.recipe
        if recipe.teacher.path is not None:
            backend.set_trainable(self.model, False)
            return Path(recipe.teacher.path), None
        if self.training.epochs == 0:  # used as built (pretrained weights)
            backend.set_trainable(self.model, False)
            return (backend.save(self.model, self.spec, out / "teacher") if is_main_process() else None), None
        backend.set_trainable(self.model, True)
        with backend.scope(self.device, self.training):
            objective = Objective.task_only(recipe.task, recipe.teacher.heads)
            trainee = backend.distiller(self.model, objective, None, (), None, self.device, self.training.seed)
            history = fit("teacher", backend, trainee, self.data, self.training, self.device,
                          checkpoint_stem=checkpoints / "teacher", resume=resume, augment=recipe.data.augment,
                          run_dir=out)
        backend.set_trainable(self.model, False)
        return (backend.save(self.model, self.spec, out / "teacher") if is_main_process() else None), history


    def dlpack_forward(self) -> Any:
        """The teacher as it is now, frozen, as ``x -> logits`` for any array that speaks DLPack
        (backends with the ``dlpack_teacher`` capability)."""
        return self.backend.dlpack_forward(self.model, self.device)


def teacher_predict(recipe: Recipe, data: TaskData, batch_size: int, backend: Backend) -> tuple[Predict, dict[str, Any]]:
    """The trained teacher of ``teacher.path`` as ``predict(x) -> logits`` on numpy batches, and
    its identity for a store's manifest (:mod:`kdistill.store.cache`)."""
    device = backend.device(recipe.train.device)
    with backend.scope(device, recipe.train):
        model, _ = backend.build(recipe.teacher, data, "teacher", recipe.teacher_training().seed, device)
    backend.set_trainable(model, False)

    def predict(x: np.ndarray) -> np.ndarray:
        return backend.predict(model, x, batch_size, device)

    return predict, {"class": type(model).__name__, "parameters": backend.count_parameters(model)}
