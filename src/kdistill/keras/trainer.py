"""The Keras training loop shared by teacher, distilled student and scratch twin: ``Distiller.fit``
on the seeded batches of ``kdistill.training.epoch_plan``, with one callback for what every run
needs (finiteness checks, progress, validation metric, per-epoch checkpoint).

The batches of epoch ``e`` depend only on ``(seed, e)``, and a checkpoint holds every variable of
the distiller (weights, adapters, dropout seed states) and of the optimizer, written atomically
after every epoch: a run resumed from epoch ``e`` continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.keras.distiller import Distiller
from kdistill.keras import parallel
from kdistill.progress import epoch_progress
from kdistill.recipe import TrainConfig
from kdistill.report.metrics import PRIMARY, task_metrics
from kdistill.training import CHECK_EVERY, History, check_finite, epoch_plan


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


def batches(data: TaskData, config: TrainConfig, start_epoch: int, transfer: bool,
            teacher_outputs: Callable[[np.ndarray], np.ndarray] | None) -> Iterator[tuple[dict, np.ndarray]]:
    """``({"inputs": rows[, "teacher_outputs": logits]}, labels)`` for every step from
    ``start_epoch`` on: ``batch_size`` labeled rows, then as many transfer rows when ``transfer``."""
    train = data.train
    other = data.transfer if transfer else None
    for epoch in range(start_epoch, config.epochs):
        plan = epoch_plan(config.seed, epoch, len(train), None if other is None else len(other), config.batch_size)
        for step in range(plan.steps):
            rows, transfer_rows = plan.batch(step)
            x, ids = train.x[rows], train.ids[rows]
            if transfer_rows is not None:
                x, ids = np.concatenate([x, other.x[transfer_rows]]), np.concatenate([ids, other.ids[transfer_rows]])
            inputs = {"inputs": x}
            if teacher_outputs is not None:
                inputs["teacher_outputs"] = np.asarray(teacher_outputs(ids), dtype=np.float32)
            yield inputs, train.y[rows]


def _save_checkpoint(path: Path, distiller: Distiller, history: History, epoch: int) -> None:
    arrays = {f"model/{index}": keras.ops.convert_to_numpy(v) for index, v in enumerate(distiller.variables)}
    arrays |= {f"optimizer/{index}": keras.ops.convert_to_numpy(v)
               for index, v in enumerate(distiller.optimizer.variables)}
    arrays["state"] = np.array(json.dumps({"epoch": epoch, "history": dataclasses.asdict(history)}))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        np.savez(file, **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, distiller: Distiller, role: str) -> tuple[History, int]:
    """Restore every variable; returns the history and the last finished epoch."""
    with np.load(path) as stored:
        for prefix, variables in (("model", distiller.variables), ("optimizer", distiller.optimizer.variables)):
            arrays = [stored[f"{prefix}/{index}"] for index in range(sum(k.startswith(prefix + "/") for k in stored))]
            shapes = [tuple(v.shape) for v in variables]
            if [a.shape for a in arrays] != shapes:
                raise KdistillError(
                    f"--resume: {path} does not fit this recipe's {role} model (resume with the recipe of the "
                    f"interrupted run, or start afresh in another --out): its {prefix} variables differ"
                )
            for variable, array in zip(variables, arrays):
                variable.assign(array)
        state = json.loads(str(stored["state"]))
    return History(**state["history"]), state["epoch"]


class _RunCallback(keras.callbacks.Callback):
    """Per step: finiteness check and progress every CHECK_EVERY steps. Per epoch: the mean loss
    parts, the validation metric, a checkpoint."""

    def __init__(self, role: str, distiller: Distiller, data: TaskData, config: TrainConfig, history: History,
                 checkpoint: Path | None, steps: int, progress):
        super().__init__()
        self.role, self.distiller, self.data, self.config = role, distiller, data, config
        self.history, self.checkpoint, self.steps, self.progress = history, checkpoint, steps, progress
        self.names = ["total", *distiller.parts]
        self.epoch, self.started = 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.started = epoch, time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (batch + 1) % CHECK_EVERY and batch + 1 != self.steps:
            return
        # Keras logs hold each part's running mean over the epoch: non-finite from a bad step on
        row = np.array([[float(logs[name]) for name in self.names]])
        check_finite(self.role, self.epoch, batch, row, self.names[1:], self.checkpoint)
        self.progress.step(self.epoch, batch + 1, loss=row[0, 0])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.history.train_seconds += time.perf_counter() - self.started
        self.history.loss.append({name: float(logs[name]) for name in self.names})
        outputs = predict(self.distiller.student, self.data.val.x, self.config.eval_batch_size)
        self.history.val.append(task_metrics(self.data.task, outputs, self.data.val.y)[self.history.metric])
        self.progress.end_epoch(epoch, self.history.loss[-1]["total"], **{self.history.metric: self.history.val[-1]})
        if self.checkpoint is not None:
            _save_checkpoint(self.checkpoint, self.distiller, self.history, epoch)


def fit(role: str, distiller: Distiller, data: TaskData, config: TrainConfig, checkpoint: Path | None = None,
        resume: bool = False, teacher_outputs: Callable[[np.ndarray], np.ndarray] | None = None) -> History:
    """Train ``distiller``'s student (and adapters) for ``config.epochs`` with ``Distiller.fit``;
    returns the history.

    Each step takes ``batch_size`` labeled samples and, when the data has a transfer set and the
    distiller distills, ``batch_size`` unlabeled ones for the distillation terms (a teacher or
    scratch twin, trained on labels alone, never sees them). Offline, ``teacher_outputs`` maps the
    batch's sample ids to the teacher's outputs (a soft-target store's ``fetch``)."""
    transfer = data.transfer is not None and distiller.distills
    steps = epoch_plan(config.seed, 0, len(data.train), None, config.batch_size).steps
    with parallel.build_scope(config.data_parallel):  # TensorFlow: the optimizer's variables mirrored
        distiller.compile(optimizer=make_optimizer(config, steps * config.epochs))
        distiller.optimizer.build(distiller.trainable_variables)
    history, start_epoch = History(metric=PRIMARY[data.task]), 0
    if resume and checkpoint is not None and checkpoint.exists():
        history, last_epoch = _load_checkpoint(checkpoint, distiller, role)
        start_epoch = last_epoch + 1
    with epoch_progress(role, config.epochs, steps, enabled=config.progress) as progress:
        progress.skip(start_epoch)
        if start_epoch < config.epochs:
            callback = _RunCallback(role, distiller, data, config, history, checkpoint, steps, progress)
            def make_batches() -> Iterator[tuple[dict, np.ndarray]]:
                return batches(data, config, start_epoch, transfer, teacher_outputs)
            with parallel.data_parallel(distiller, config.data_parallel):
                feed = make_batches()
                if config.data_parallel and keras.backend.backend() == "tensorflow":
                    feed = parallel.distributed_batches(make_batches)
                distiller.fit(feed, epochs=config.epochs, initial_epoch=start_epoch, steps_per_epoch=steps,
                              shuffle=False, verbose=0, callbacks=[callback])
    return history
