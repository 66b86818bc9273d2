"""``kdistill cache`` for JAX teachers: a saved Flax NNX model (``teacher.path``) as the predict
function of :mod:`kdistill.store.cache` (one jitted eval-mode forward per batch shape); and the
teacher a student of another framework gets (:func:`build_teacher`, :mod:`kdistill.cross_framework`)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from kdistill.data.splits import TaskData
from kdistill.jax.models import count_parameters, load_model
from kdistill.jax.pipeline import choose_device
from kdistill.jax.teacher import Teacher
from kdistill.jax.trainer import predict
from kdistill.recipe import Recipe
from kdistill.store.cache import Predict


def teacher_predict(recipe: Recipe, data: TaskData, batch_size: int) -> tuple[Predict, dict[str, Any]]:
    """The teacher's ``predict(x) -> logits`` and its identity for the store manifest."""
    with jax.default_device(choose_device(recipe.train.device)):  # its parameters, and so its forwards, live there
        teacher = load_model(recipe.teacher.path, "teacher")

    def run(x: np.ndarray) -> np.ndarray:
        return predict(teacher, x, batch_size)

    return run, {"class": type(teacher).__name__, "parameters": count_parameters(teacher)}


def build_teacher(recipe: Recipe, data: TaskData) -> Teacher:
    """The recipe's teacher, built and checked on the run's device (nothing compiled or trained yet)."""
    return Teacher(recipe, data, choose_device(recipe.train.device))
