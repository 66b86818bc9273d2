"""The teacher of a Keras run: built and checked first, then trained (or loaded from
``teacher.path``), saved and frozen. The same object serves a Keras student online and, for a
student of another framework, the teacher that is cached to its store (:mod:`kdistill.cross_framework`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kdistill.backend_common import check_output_shape
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.keras.distiller import Distiller
from kdistill.keras.models import build_model, save_model
from kdistill.keras.parallel import build_scope
from kdistill.keras.trainer import fit
from kdistill.recipe import Recipe
from kdistill.training import History

CPU = 1  # DLPack's device type of host memory (kDLCPU)


def check_outputs(model: keras.Model, probe: np.ndarray, data: TaskData, field: str) -> None:
    """One inference forward on ``probe`` (which also builds a subclassed model's weights): the
    model must take the data and give ``(output_dim,)``."""
    try:
        shape = tuple(model(probe, training=False).shape[1:])
    except Exception as error:  # the user's model rejected the data: say which and why
        raise KdistillError(f"{field}: forward pass on inputs {tuple(probe.shape[1:])} failed: {error}") from None
    check_output_shape(field, shape, data)


class Teacher:
    """``__init__`` builds the teacher with its own seed and checks it (nothing trained or
    written); :meth:`prepare` trains it unless ``teacher.path`` gave a trained model."""

    def __init__(self, recipe: Recipe, data: TaskData, probe: np.ndarray):
        self.recipe, self.data = recipe, data
        keras.utils.set_random_seed(recipe.teacher_training().seed)
        with build_scope(recipe.teacher_training().data_parallel):  # TensorFlow: variables mirrored
            self.model = build_model(recipe.teacher, data, "teacher")
            check_outputs(self.model, probe, data, "teacher")
        self.parameters = int(self.model.count_params())

    def prepare(self, out: Path, checkpoints: Path, resume: bool) -> tuple[Path, History | None]:
        """Train (on resume, a finished teacher's checkpoint restores its weights and history
        without training) and save to ``out/teacher.keras``, or take ``teacher.path``; then freeze.
        Returns the model file and the training history (None for a loaded teacher)."""
        if self.recipe.teacher.path is not None:
            return Path(self.recipe.teacher.path), None
        self.model.trainable = True
        with build_scope(self.recipe.teacher_training().data_parallel):
            trainee = Distiller(self.model, {"task": 1.0}, task=self.recipe.task, name="teacher")
        history = fit("teacher", trainee, self.data, self.recipe.teacher_training(), checkpoints / "teacher.npz", resume)
        self.model.trainable = False
        return save_model(self.model, out / "teacher.keras"), history

    def dlpack_forward(self) -> Callable[[Any], Any]:
        """The teacher as it is now, frozen: ``x -> logits`` for any array that speaks DLPack (a
        torch tensor, say), taken without a copy where the backend allows (jax, torch; TensorFlow
        copies the batch in), in inference mode (compiled once per batch shape on TensorFlow); the
        result speaks DLPack too."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            call = tf.function(lambda x: self.model(x, training=False))

            def to_tensorflow(x: Any) -> tf.Tensor:
                if x.__dlpack_device__()[0] == CPU:  # TensorFlow takes only 64-byte aligned host memory:
                    return tf.convert_to_tensor(np.from_dlpack(x))  # copied once, through a zero-copy view
                return tf.experimental.dlpack.from_dlpack(x.__dlpack__())

            return lambda x: tf.experimental.dlpack.to_dlpack(call(to_tensorflow(x)))  # logits out without a copy
        if backend == "jax":
            import jax.numpy as jnp

            return lambda x: self.model(jnp.from_dlpack(x), training=False)
        return lambda x: self.model(x, training=False)  # the torch backend takes the torch tensor itself
