"""The one training loop: teacher, distilled student and scratch twin of every backend train here.

Per epoch: the seeded plan (:mod:`kdistill.training.plan`) gives every step's rows; steps go to
the backend's :class:`~kdistill.backends.contract.StepRunner` a chunk of ``CHECK_EVERY`` at a
time, with the teacher's outputs for the whole chunk read in one call (a soft-target store's
``fetch``, a teacher of another framework run on those samples and views, or a teacher run on
the chunk's inputs in a worker thread ahead of the student: :mod:`kdistill.training.ahead`) and, with
``data.augment``, each sample's view of the epoch drawn on the host. A chunk's losses are read
once the next chunk is running (the device rarely waits) and checked to be finite: a divergence
names its epoch and exact step and keeps the last good checkpoint. After every epoch: the
validation metric, the events (progress bar, TensorBoard, MLflow) and a checkpoint
(:mod:`kdistill.training.checkpoint`); resuming from it continues exactly as an uninterrupted run.
With ``train.checkpoint_steps``, checkpoints are also taken within an epoch, at chunk boundaries,
and a resume continues from that step.

Inputs stay on the device when the data is in memory; a split that streams from disk, or any
split under ``data.augment``, is read on the host by :mod:`kdistill.data.stream`: parallel
workers decode (and augment) each step's rows after ``runner.local`` chose this process's share,
a few chunks ahead of the one training, in the order of the plan.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdistill.backends.contract import Backend, StepRunner
from kdistill.data.splits import TaskData
from kdistill.data.stream import needs_reader, read_ahead, step_reader
from kdistill.errors import TrainingDiverged
from kdistill.progress import epoch_progress
from kdistill.ranks import is_main_process
from kdistill.recipe import AugmentConfig, TrainConfig
from kdistill.report.metrics import PRIMARY, task_metrics
from kdistill.training import CHECK_EVERY, History, checkpoint
from kdistill.training.ahead import ChunkTeacher, by_ids, with_outputs
from kdistill.training.plan import Step, epoch_plan, steps_per_epoch

Fetch = Callable[[np.ndarray, np.ndarray | None], Any]  # (sample ids, view ids or None) -> teacher outputs


def check_finite(role: str, epoch: int, first_step: int, rows: np.ndarray, names: list[str],
                 kept: Path | None) -> None:
    """``rows`` holds ``[total, *parts]`` for steps ``first_step``... (0-based): raise
    TrainingDiverged at the first row that is not finite, naming the epoch, step and parts."""
    finite = np.isfinite(rows).all(axis=1)
    if finite.all():
        return
    bad = int(np.flatnonzero(~finite)[0])
    raise TrainingDiverged(role, epoch + 1, first_step + bad + 1, dict(zip(names, rows[bad].tolist())),
                           str(kept) if kept is not None else None)


class _EpochLosses:
    """An epoch's per-step losses: chunks pending on the device, then checked rows on the host."""

    def __init__(self, role: str, epoch: int, runner: StepRunner, kept: Path | None, progress,
                 done: checkpoint.Within | None = None):
        self.role, self.epoch, self.runner, self.kept, self.progress = role, epoch, runner, kept, progress
        self.pending: list[tuple[int, Any]] = []
        self.rows: list[np.ndarray] = [] if done is None or not done.losses else [np.asarray(done.losses, np.float64)]

    def add(self, first_step: int, pending: Any) -> None:
        self.pending.append((first_step, pending))

    def check(self, keep_last: int = 0) -> None:
        """Read and check every chunk but the last ``keep_last`` (those may still be running)."""
        while len(self.pending) > keep_last:
            first_step, pending = self.pending.pop(0)
            rows = self.runner.losses(pending)
            check_finite(self.role, self.epoch, first_step, rows, self.runner.names, self.kept)
            self.rows.append(rows)
            self.progress.step(self.epoch, first_step + len(rows), loss=float(rows[-1, 0]))

    def means(self) -> list[float]:
        return np.concatenate(self.rows).mean(axis=0).tolist()

    def checked(self) -> list[list[float]]:
        """Every row so far, read and checked (what a checkpoint within the epoch keeps)."""
        self.check()
        return np.concatenate(self.rows).tolist() if self.rows else []


def _chunks(planned: Sequence[Step], first_step: int, read: Callable[[Step], Step] | None,
            config: TrainConfig) -> Iterator[tuple[int, list[Step]]]:
    """The planned steps from ``first_step`` on, ``CHECK_EVERY`` at a time with their first step's
    index; with ``read``, each step's host inputs read ahead by the reader's workers."""
    todo = planned[first_step:]
    steps = iter(todo) if read is None else read_ahead(todo, read, config.workers, config.prefetch * CHECK_EVERY)
    with contextlib.closing(steps) if read is not None else contextlib.nullcontext():
        for first in range(first_step, len(planned), CHECK_EVERY):
            yield first, list(itertools.islice(steps, CHECK_EVERY))


def _checkpoint_due(every: int | None, epoch: int, steps: int, first: int, done: int) -> bool:
    """Has the run passed a multiple of ``train.checkpoint_steps`` within ``[first, done)`` of
    ``epoch`` (its end excluded: the epoch's own checkpoint follows)?"""
    if every is None or done == steps:
        return False
    return (epoch * steps + first) // every < (epoch * steps + done) // every


def fit(role: str, backend: Backend, distiller: Any, data: TaskData, config: TrainConfig, device: Any, *,
        checkpoint_stem: Path | None = None, resume: bool = False, teacher_outputs: ChunkTeacher | Fetch | None = None,
        teacher_ahead: bool = False, augment: AugmentConfig | None = None, stored_views: int | None = None,
        run_dir: Path | None = None, epoch_end: Callable[[int, float], None] | None = None) -> History:
    """Train ``distiller``'s student (and adapters) for ``config.epochs``; returns the history and
    leaves the trained weights in the student.

    Each step takes ``batch_size`` labeled samples and, when the data has a transfer set and the
    objective distills, ``batch_size`` unlabeled ones for the distillation terms (a teacher or
    scratch twin, trained on labels alone, never sees them). ``teacher_outputs`` gives a chunk's
    teacher outputs when no teacher model runs in the step: a :class:`~.ahead.ChunkTeacher`, or
    a store's ``fetch(sample ids, view ids or None)``; with ``teacher_ahead``, a worker thread
    computes them for the next chunks while the student trains (:mod:`.ahead`).
    With ``augment``, every sample is replaced by its view of the epoch: a fresh one online, one
    of the store's ``stored_views`` offline (:mod:`kdistill.data.augment`). ``checkpoint_stem``:
    where the state is saved after every epoch and every ``config.checkpoint_steps`` steps (and
    resumed from with ``resume``, within an epoch too); ``run_dir``: where ``config.log``'s
    events go; ``epoch_end(epoch, validation metric)`` is called after every epoch (a
    hyper-parameter search reports the curve to its pruner there, which may stop the fit by
    raising)."""
    transfer = data.transfer is not None and distiller.objective.distills
    n_transfer = len(data.transfer) if transfer else None
    steps = steps_per_epoch(len(data.train), config.batch_size)
    runner = backend.runner(distiller, data, config, steps * config.epochs, transfer, device)
    history, start_epoch, done = History(metric=PRIMARY[data.task]), 0, None
    if resume and checkpoint_stem is not None:
        checkpoint.refuse_foreign(checkpoint_stem.parent)
        if checkpoint.exists(checkpoint_stem):
            arrays, last_epoch, history = checkpoint.load(checkpoint_stem, role)
            checkpoint.check_fits(arrays, runner.state(), role, checkpoint_stem)
            runner.load_state(arrays)
            start_epoch, done = last_epoch + 1, checkpoint.within(checkpoint_stem)
    main = is_main_process()
    events = None
    if config.log and main:
        from kdistill.training.events import Events

        events = Events(run_dir, role, config.log)
    if teacher_outputs is not None and not isinstance(teacher_outputs, ChunkTeacher):
        teacher_outputs = by_ids(teacher_outputs, augment is not None and augment.teacher_sees == "view")
    needs_ids = augment is not None or (teacher_outputs is not None and teacher_outputs.needs_ids)
    read = step_reader(data, augment) if needs_reader(data, augment) else None
    try:
        with runner.session(), epoch_progress(role, config.epochs, steps, enabled=config.progress and main) as progress:
            progress.skip(start_epoch)
            for epoch in range(start_epoch, config.epochs):
                started = time.perf_counter() - (done.seconds if done is not None else 0.0)
                plan = epoch_plan(config.seed, epoch, len(data.train), n_transfer, config.batch_size)
                planned = [runner.local(Step(*plan.batch(index))) for index in range(plan.steps)]
                if needs_ids:
                    planned = [step.with_ids(data, config.seed, epoch, stored_views, augment is not None)
                               for step in planned]
                kept = checkpoint.files(checkpoint_stem)[0] if checkpoint_stem is not None and \
                    checkpoint.exists(checkpoint_stem) else None
                losses = _EpochLosses(role, epoch, runner, kept, progress, done)
                chunks = with_outputs(_chunks(planned, 0 if done is None else done.step, read, config),
                                      teacher_outputs, teacher_ahead)
                with contextlib.closing(chunks):
                    for first, chunk, outputs in chunks:  # closed early (an error): the teacher and readers stop
                        losses.add(first, runner.run(chunk, outputs))
                        losses.check(keep_last=1)  # the previous chunk: done by now, while this one runs
                        if checkpoint_stem is not None and main and \
                                _checkpoint_due(config.checkpoint_steps, epoch, plan.steps, first, first + len(chunk)):
                            within = checkpoint.Within(first + len(chunk), losses.checked(), time.perf_counter() - started)
                            checkpoint.save(checkpoint_stem, runner.state(), epoch - 1, history, within)
                done = None
                losses.check()
                runner.finish()
                seconds = time.perf_counter() - started
                history.train_seconds += seconds
                history.epoch_seconds.append(seconds)
                history.loss.append(dict(zip(runner.names, losses.means())))
                outputs = backend.predict(backend.student(distiller), data.val.x, config.eval_batch_size, device,
                                          workers=config.workers)
                history.val.append(task_metrics(data.task, outputs, data.val.y)[history.metric])
                progress.end_epoch(epoch, history.loss[-1]["total"], **{history.metric: history.val[-1]})
                if events is not None:
                    events.epoch(epoch, history.loss[-1], {history.metric: history.val[-1]}, seconds)
                if checkpoint_stem is not None and main:
                    checkpoint.save(checkpoint_stem, runner.state(), epoch, history)
                if epoch_end is not None:
                    epoch_end(epoch, history.val[-1])
    finally:
        if events is not None:
            events.close()
    return history
