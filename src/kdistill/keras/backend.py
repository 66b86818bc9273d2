"""The Keras 3 backend: the contract of :mod:`kdistill.backends.contract` on ``keras.Model``s, on
whichever framework ``KERAS_BACKEND`` names. Its step is Keras's own compiled ``train_step`` of
:class:`kdistill.keras.distiller.Distiller` (``train_on_batch``), so every Keras backend, its
distributions and its callbacks-free engine serve the one loop; the distiller stays a
``keras.Model`` that users may also ``fit`` themselves. With ``train.data_parallel``: a
``DataParallel`` distribution on the JAX backend, a ``MirroredStrategy`` on TensorFlow, each chunk
of steps split over its replicas by :mod:`kdistill.keras.parallel`. State: every variable of the
distiller (weights, adapters, dropout seed states) and of its optimizer, named by position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kdistill.backends import REGISTRY
from kdistill.backends.contract import Backend, StepRunner
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.keras import parallel
from kdistill.keras.distiller import Distiller, tap_model
from kdistill.keras.models import build_model, save_model
from kdistill.objective import Objective
from kdistill.recipe import FeaturePair, ModelConfig, TrainConfig
from kdistill.training.plan import Step

CPU = 1  # DLPack's device type of host memory (kDLCPU)


def predict(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Raw outputs (logits at T = 1) in inference mode, as float64 numpy."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)


def make_optimizer(config: TrainConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer with a per-step schedule: constant, cosine to 0 over the run, or ×0.1
    at 1/2 and 3/4 of it (as the PyTorch backend). Keras decays weights decoupled (as AdamW) for
    every optimizer, where torch's ``adam`` and ``sgd`` add an L2 term to the gradient."""
    lr: float | keras.optimizers.schedules.LearningRateSchedule = config.lr
    if config.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=max(total_steps, 1))
    elif config.schedule == "step":
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(
            [total_steps // 2, (3 * total_steps) // 4], [config.lr, config.lr * 0.1, config.lr * 0.01])
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=config.momentum, weight_decay=config.weight_decay or None)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr, epsilon=1e-8, weight_decay=config.weight_decay or None)
    return keras.optimizers.AdamW(lr, epsilon=1e-8, weight_decay=config.weight_decay)


def _named(prefix: str, variables: list) -> dict[str, Any]:
    """Variables by position: Keras numbers the paths of every new model and optimizer (``adam_w_3``)."""
    return {f"{prefix}/{index:04d}": variable for index, variable in enumerate(variables)}


class KerasRunner(StepRunner):
    """``train_on_batch`` per step (metrics reset each time, so its logs are that step's losses);
    under a MirroredStrategy, the compiled train function over the chunk split per replica."""

    def __init__(self, distiller: Distiller, data: TaskData, config: TrainConfig, total_steps: int, transfer: bool,
                 device: str):
        self.distiller, self.data, self.config = distiller, data, config
        self.names = ["total", *distiller.objective.parts]
        with parallel.build_scope(config.data_parallel):  # TensorFlow: the optimizer's variables mirrored
            distiller.compile(optimizer=make_optimizer(config, total_steps))
            distiller.optimizer.build(distiller.trainable_variables)
        self.mirrored = config.data_parallel and keras.backend.backend() == "tensorflow"

    def session(self) -> contextlib.AbstractContextManager:
        return parallel.data_parallel(self.distiller, self.config.data_parallel)

    def _batches(self, steps: Sequence[Step], teacher_outputs: np.ndarray | None) -> Iterator[tuple[dict, np.ndarray]]:
        start = 0
        for step in steps:
            inputs = {"inputs": step.inputs(self.data) if step.x is None else step.x}
            if teacher_outputs is not None:
                inputs["teacher_outputs"] = np.asarray(teacher_outputs[start:start + step.size], np.float32)
                start += step.size
            yield inputs, self.data.train.y[step.rows]

    def run(self, steps: Sequence[Step], teacher_outputs: np.ndarray | None) -> np.ndarray:
        if self.mirrored:
            self.distiller.make_train_function()
            iterator = iter(parallel.distributed_batches(lambda: self._batches(steps, teacher_outputs)))
            logs = []
            for _ in steps:
                self.distiller.reset_metrics()
                logs.append(self.distiller.train_function(iterator))
        else:
            logs = [self.distiller.train_on_batch(x, y, return_dict=True) for x, y in self._batches(steps, teacher_outputs)]
        return np.array([[float(log[name]) for name in self.names] for log in logs], np.float64)

    def losses(self, pending: np.ndarray) -> np.ndarray:
        return pending

    def _variables(self) -> dict[str, Any]:
        return _named("model", self.distiller.variables) | _named("optimizer", self.distiller.optimizer.variables)

    def state(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(keras.ops.convert_to_numpy(variable)) for name, variable in self._variables().items()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for name, variable in self._variables().items():
            variable.assign(arrays[name])


class KerasBackend(Backend):
    info = REGISTRY["keras"]

    @staticmethod
    def _devices() -> list[str]:
        if keras.backend.backend() == "torch":  # keras.distribution has no torch implementation
            import torch

            return ["cuda:0"] if torch.cuda.is_available() else ["cpu:0"]
        return keras.distribution.list_devices()

    def device(self, name: str) -> str:
        """The first device Keras sees; ``cuda`` must find a GPU."""
        devices = self._devices()
        if name == "cuda" and not any(device.lower().startswith(("gpu", "cuda")) for device in devices):
            raise KdistillError(f"train.device: 'cuda' requested but Keras ({keras.backend.backend()}) sees no GPU "
                                "(use 'auto' or 'cpu')")
        return devices[0]

    def environment(self, device: str, config: TrainConfig) -> dict[str, Any]:
        return {"keras": keras.__version__, "keras_backend": keras.backend.backend(), "device": device,
                "data_parallel_devices": len(keras.distribution.list_devices()) if config.data_parallel else 1}

    def scope(self, device: str, config: TrainConfig) -> contextlib.AbstractContextManager:
        return parallel.build_scope(config.data_parallel)  # TensorFlow: every variable mirrored

    def build(self, config: ModelConfig, data: TaskData, field: str, seed: int, device: str) -> tuple[keras.Model, dict]:
        keras.utils.set_random_seed(seed)
        return build_model(config, data, field), {"config": config, "field": field}

    def output_shape(self, model: keras.Model, probe: np.ndarray, device: str) -> tuple[int, ...]:
        return tuple(model(probe, training=False).shape[1:])  # also builds a subclassed model's weights

    def save(self, model: keras.Model, spec: dict, stem: Path) -> Path:
        return save_model(model, stem.with_suffix(".keras"))

    def clone(self, model: keras.Model, spec: dict, data: TaskData, probe: np.ndarray, device: str) -> keras.Model:
        """``clone_model`` with the model's weights (a subclassed model, which Keras cannot clone,
        is built again by its factory from the recipe section in ``spec``)."""
        if getattr(model, "inputs", None) is not None:
            twin = keras.models.clone_model(model)
        else:
            twin = build_model(spec["config"], data, spec["field"])
            twin(probe)
        twin.set_weights(model.get_weights())
        return twin

    def count_parameters(self, model: keras.Model) -> int:
        return int(model.count_params())

    def predict_array(self, model: keras.Model, x: np.ndarray, batch_size: int, device: str) -> np.ndarray:
        return predict(model, x, batch_size)

    def embed_array(self, model: keras.Model, x: np.ndarray, path: str, batch_size: int, device: str) -> np.ndarray:
        tapped = tap_model(model, [path], ["compare.embedding"])
        embeddings = tapped.predict(x, batch_size=batch_size, verbose=0)[1]
        return np.asarray(embeddings, dtype=np.float64).reshape(len(x), -1)

    def timed_forward(self, model: keras.Model, x: np.ndarray, device: str) -> Callable[[int], None]:
        def forward(size: int) -> None:
            model.predict_on_batch(x[np.arange(size) % len(x)])
        return forward

    def frozen_forward(self, model: keras.Model, device: str) -> Callable[[np.ndarray], np.ndarray]:
        """``model(x, training=False)``, compiled once per batch shape on TensorFlow, without the
        per-call set-up of ``predict``."""
        call = (lambda x: model(x, training=False))
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            call = tf.function(call)
        return lambda x: np.asarray(keras.ops.convert_to_numpy(call(x)), np.float32)

    def set_trainable(self, model: keras.Model, trainable: bool) -> None:
        model.trainable = trainable

    def dlpack_forward(self, model: keras.Model, device: str) -> Callable[[Any], Any]:
        """The model frozen, as ``x -> logits`` for any array that speaks DLPack (a torch tensor,
        say), taken without a copy where the backend allows (jax, torch; TensorFlow copies the
        batch in), in inference mode (compiled once per batch shape on TensorFlow); the result
        speaks DLPack too."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            call = tf.function(lambda x: model(x, training=False))

            def to_tensorflow(x: Any) -> tf.Tensor:
                if x.__dlpack_device__()[0] == CPU:  # TensorFlow takes only 64-byte aligned host memory:
                    return tf.convert_to_tensor(np.from_dlpack(x))  # copied once, through a zero-copy view
                return tf.experimental.dlpack.from_dlpack(x.__dlpack__())

            return lambda x: tf.experimental.dlpack.to_dlpack(call(to_tensorflow(x)))  # logits out without a copy
        if backend == "jax":
            import jax.numpy as jnp

            return lambda x: model(jnp.from_dlpack(x), training=False)
        return lambda x: model(x, training=False)  # the torch backend takes the torch tensor itself

    def distiller(self, student: keras.Model, objective: Objective, teacher: keras.Model | None,
                  features: Sequence[FeaturePair], probe: np.ndarray | None, device: str, seed: int) -> Distiller:
        return Distiller(student, objective.weights, objective.losses, teacher=teacher, features=features,
                         task=objective.task, offline=teacher is None, probe=probe,
                         heads=objective.heads)

    def runner(self, distiller: Distiller, data: TaskData, config: TrainConfig, total_steps: int, transfer: bool,
               device: str) -> KerasRunner:
        return KerasRunner(distiller, data, config, total_steps, transfer, device)

    def export(self, model: keras.Model, format: str, path: Path, example: np.ndarray, quantize: str | None = None) -> None:
        from kdistill.keras.export import export

        export(model, format, path, example, quantize)

    def student(self, distiller: Distiller) -> keras.Model:
        return distiller.student


BACKEND = KerasBackend()
