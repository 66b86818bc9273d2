"""``kdistill cache`` for Keras teachers: a trained ``.keras`` model (``teacher.path``) as the
predict function of :mod:`kdistill.store.cache`; and the teacher a student of another
framework gets (:func:`build_teacher`, :mod:`kdistill.cross_framework`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdistill.data.splits import TaskData
from kdistill.keras.models import load_model
from kdistill.keras.teacher import Teacher
from kdistill.keras.trainer import predict
from kdistill.recipe import Recipe
from kdistill.store.cache import Predict


def teacher_predict(recipe: Recipe, data: TaskData, batch_size: int) -> tuple[Predict, dict[str, Any]]:
    """The teacher's ``predict(x) -> logits`` and its identity for the store manifest."""
    teacher = load_model(recipe.teacher.path, "teacher")

    def run(x: np.ndarray) -> np.ndarray:
        return predict(teacher, x, batch_size)

    return run, {"class": type(teacher).__name__, "parameters": int(teacher.count_params())}


def build_teacher(recipe: Recipe, data: TaskData) -> Teacher:
    """The recipe's teacher, built and checked (nothing trained yet)."""
    return Teacher(recipe, data, data.train.x[:4])
