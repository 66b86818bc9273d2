"""``kdistill cache`` for JAX teachers: a saved Flax NNX model (``teacher.path``) as the predict
function of :mod:`kdistill.store.cache` (one jitted eval-mode forward per batch shape)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdistill.data.splits import TaskData
from kdistill.jax.models import count_parameters, load_model
from kdistill.jax.trainer import predict
from kdistill.recipe import Recipe
from kdistill.store.cache import Predict


def teacher_predict(recipe: Recipe, data: TaskData, batch_size: int) -> tuple[Predict, dict[str, Any]]:
    """The teacher's ``predict(x) -> logits`` and its identity for the store manifest."""
    teacher = load_model(recipe.teacher.path, "teacher")

    def run(x: np.ndarray) -> np.ndarray:
        return predict(teacher, x, batch_size)

    return run, {"class": type(teacher).__name__, "parameters": count_parameters(teacher)}
