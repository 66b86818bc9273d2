"""The Optuna studies of a sweep: one per role (distilled, scratch) in the SQLite storage of the
sweep directory, so an interrupted sweep resumes where it stopped.

Each study has a seeded TPE sampler and a median pruner on the per-epoch validation curve. On a
rerun the finished trials (complete, pruned, failed) are kept and counted; a trial that was
running when the sweep was killed is marked failed (user attribute ``interrupted``, not counted)
and enqueued again with the same values, and the sampler is seeded afresh from the seed and the
number of trials already held, so no draw of the first run is repeated. Trials run in ``jobs``
processes at once, each with its share of the trials to go.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdistill.data import TaskData, load_task_data
from kdistill.errors import TrainingDiverged
from kdistill.recipe import Recipe
from kdistill.report.metrics import HIGHER_IS_BETTER, PRIMARY
from kdistill.sweep.objective import Trainer, trial_objective
from kdistill.sweep.space import Space

DATABASE = "sweep.db"
PRUNER_STARTUP = 3
"""Trials completed before the pruner stops any (it compares a trial with their curves)."""
SEED_STRIDE = 1_000_003
"""Between the sampler seeds of a study's workers and resumptions (and of the two studies)."""


def storage_url(directory: Path) -> str:
    return f"sqlite:///{(directory / DATABASE).resolve().as_posix()}"


def _storage(directory: Path) -> Any:
    import optuna

    return optuna.storages.RDBStorage(storage_url(directory), engine_kwargs={"connect_args": {"timeout": 60}})


def open_study(directory: Path, role: str, task: str, seed: int, worker: int = 0) -> Any:
    """The study of ``role`` in ``directory`` (made on first use), its sampler seeded from
    ``seed``, the role, the worker and the trials it already holds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(directory)
    direction = "maximize" if HIGHER_IS_BETTER[PRIMARY[task]] else "minimize"
    study = optuna.create_study(storage=storage, study_name=role, direction=direction, load_if_exists=True)
    offset = len(study.trials) + SEED_STRIDE * (worker + 1) * (1 + (role == "scratch"))
    study.sampler = optuna.samplers.TPESampler(seed=(seed + offset) % 2**32)
    study.pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP, n_warmup_steps=1)
    return study


def finished(study: Any) -> list[Any]:
    """The trials that count towards the study's number: all that ended, less interrupted ones."""
    from optuna.trial import TrialState

    return [trial for trial in study.get_trials(deepcopy=False)
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
            and not trial.user_attrs.get("interrupted")]


def recover(study: Any, directory: Path) -> int:
    """Mark the trials a killed sweep left running as failed (``interrupted``) and enqueue each
    again with its values; returns how many. Only while no worker runs (the sweep holds its lock)."""
    from optuna.trial import TrialState

    storage = _storage(directory)
    study_id = storage.get_study_id_from_name(study.study_name)
    stale = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return len(stale)


@dataclass(frozen=True)
class Work:
    """One worker's share of a study: everything a process needs to run it (picklable)."""

    directory: Path
    role: str
    base: Recipe
    space: Space
    trials: int
    seconds: float | None
    worker: int
    target: int
    data: TaskData | None  # the splits, when the sweep was given them; else loaded from base.data


def _report(role: str, target: int, metric: str):
    def callback(study: Any, trial: Any) -> None:
        done = len(finished(study))
        value = "—" if trial.value is None else f"{trial.value:.4f}"
        if trial.state.name == "PRUNED":
            value = f"pruned after epoch {max(trial.intermediate_values, default=-1) + 1}"
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:
            best = "—"
        print(f"sweep {role} trial {done}/{target}: validation {metric} {value} (best {best})",
              file=sys.stderr, flush=True)
    return callback


def work(job: Work, trainer: Trainer | None = None) -> None:
    """Run ``job.trials`` trials of ``job.role``'s study (stopping early after ``job.seconds``);
    a diverged trial fails and the study goes on."""
    if trainer is None:
        trainer = Trainer(job.base, job.data or load_task_data(job.base.data, job.base.task))
    study = open_study(job.directory, job.role, job.base.task, job.base.train.seed, job.worker)
    study.optimize(trial_objective(trainer, job.space, job.role), n_trials=job.trials, timeout=job.seconds,
                   catch=(TrainingDiverged,), callbacks=[_report(job.role, job.target, trainer.metric)],
                   gc_after_trial=False)


def run_study(directory: Path, role: str, space: Space, target: int, jobs: int, seconds: float | None,
              trainer: Trainer, pass_data: bool) -> Any:
    """Bring ``role``'s study to ``target`` finished trials (or until ``seconds`` pass), in
    ``jobs`` processes (``trainer``'s own with one; other processes get its data when
    ``pass_data``, else load it); returns the study."""
    base = trainer.base
    study = open_study(directory, role, base.task, base.train.seed)
    recover(study, directory)
    remaining = target - len(finished(study))
    if remaining > 0:
        jobs = min(jobs, remaining)
        shares = [remaining // jobs + (worker < remaining % jobs) for worker in range(jobs)]
        works = [Work(directory, role, base, space, share, seconds, worker, target, trainer.data if pass_data else None)
                 for worker, share in enumerate(shares)]
        if jobs == 1:
            work(works[0], trainer)
        else:
            _in_processes(works)
    return open_study(directory, role, base.task, base.train.seed)


def _in_processes(works: list[Work]) -> None:
    """One spawned process per share, each with its part of the cores; a failed worker is an error."""
    from kdistill.errors import KdistillError

    context = multiprocessing.get_context("spawn")
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(works)))  # read by each framework as it starts
    try:
        processes = [context.Process(target=work, args=(job,), name=f"sweep-{job.role}-{job.worker}")
                     for job in works]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    failed = [process.name for process in processes if process.exitcode != 0]
    if failed:
        raise KdistillError(f"--jobs: worker(s) {', '.join(failed)} failed (their error is above); the finished "
                            "trials are kept: rerun the same command to continue")
