"""What a trial trains and scores: the student alone, taught from the sweep's shared teacher.

The teacher is trained (or loaded from ``teacher.path``) once, saved in the sweep directory and
its outputs cached to a soft-target store there (:func:`shared_teacher`); a recipe that gives
``teacher.store`` already is taught from that store. A trial then costs one student's training:
the one loop (:func:`kdistill.training.loop.fit`) with the store's outputs, reporting the
validation curve to the study's pruner. Trials read the training and validation splits
only; :meth:`Trainer.test_metric` is the one reader of the test split, used once per seed of the
final comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdistill import backends
from kdistill.data.splits import TaskData
from kdistill.objective import Objective
from kdistill.recipe import Recipe, TeacherConfig
from kdistill.report.metrics import PRIMARY, task_metrics
from kdistill.store import MANIFEST, StoreReader
from kdistill.store.for_run import open_store_for
from kdistill.sweep.space import Space, apply, scratch_recipe
from kdistill.teacher import Teacher, probe_rows
from kdistill.training import History
from kdistill.training.loop import fit

STORE_DIR = "teacher-store"
TEACHER_STEM = "teacher"
ROLES = ("distilled", "scratch")
PRUNER_CHECKS = 5
"""Reports to the pruner in a trial of the recipe's epochs (see :func:`report_every`)."""
"""The two studies of a sweep: the distilled student and its scratch twin."""


def shared_teacher(recipe: Recipe, data: TaskData, directory: Path) -> Recipe:
    """Train (or load) the teacher once and cache its outputs in ``directory``; returns the recipe
    every trial starts from: taught from that store (or from the recipe's own ``teacher.store``),
    with no scratch twin. Resumes an interrupted teacher or cache; a finished one is reused."""
    if recipe.teacher.store is None:
        from kdistill.store.cache import cache_teacher

        backend = backends.load(recipe.backend)
        device = backend.device(recipe.train.device)
        store = directory / STORE_DIR
        if not (store / MANIFEST).exists():
            with backend.job(device):
                teacher = Teacher(recipe, data, backend, device)
                saved, _ = teacher.prepare(directory, directory / "checkpoints", resume=True)
            trained = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"path": str(saved)})})
            cache_teacher(trained, data, store, backend, batch_size=recipe.train.eval_batch_size)
        recipe = recipe.model_copy(update={"teacher": TeacherConfig(store=str(store))})
    return recipe.model_copy(update={"compare": recipe.compare.model_copy(update={"scratch": False})})


def saved_teacher(directory: Path) -> Path | None:
    """The model file of the teacher a sweep trained in ``directory`` (None when it used a store)."""
    found = sorted(path for path in directory.glob(f"{TEACHER_STEM}.*") if path.suffix != ".json")
    return found[0] if found else None


class Trainer:
    """Trains students of one sweep in this process: the data, the store and the backend are
    opened once and shared by every trial that runs here."""

    def __init__(self, base: Recipe, data: TaskData):
        self.base, self.data = base, data
        self.store: StoreReader = open_store_for(base, data)
        self.backend = backends.load(base.backend)
        self.device = self.backend.device(base.train.device)
        self.metric = PRIMARY[base.task]

    def recipe(self, role: str, values: dict[str, Any]) -> Recipe:
        """The recipe a trial of ``role`` trains: the base with the trial's values, and for the
        scratch twin the task loss alone."""
        recipe = apply(self.base, values)
        return scratch_recipe(recipe) if role == "scratch" else recipe

    def train(self, recipe: Recipe, epoch_end: Callable[[int, float], None] | None = None,
              scored: Callable[[Any], float] | None = None) -> tuple[History, float | None]:
        """Train ``recipe``'s student (distilled from the store when it has distillation losses,
        alone otherwise); returns its history and ``scored(student)`` if given."""
        backend, device, data = self.backend, self.device, self.data
        objective = Objective.of_recipe(recipe)
        with backend.job(device), backend.scope(device, recipe.train):
            student, _ = backend.build(recipe.student, data, "student", recipe.train.seed, device)
            distiller = backend.distiller(student, objective, None, (), probe_rows(data), device, recipe.train.seed)
            history = fit("distilled" if objective.distills else "scratch", backend, distiller, data, recipe.train,
                          device, teacher_outputs=self.store.fetch if objective.distills else None,
                          epoch_end=epoch_end)
            return history, None if scored is None else scored(student)

    def test_metric(self, recipe: Recipe) -> tuple[float, History]:
        """Train ``recipe``'s student and score it on the test split (T = 1)."""
        def on_test(student: Any) -> float:
            outputs = self.backend.predict(student, self.data.test.x, recipe.train.eval_batch_size, self.device)
            return task_metrics(recipe.task, outputs, self.data.test.y)[self.metric]

        history, value = self.train(recipe, scored=on_test)
        return value, history


def report_every(epochs: int) -> int:
    """Epochs between two reports to the pruner: about ``PRUNER_CHECKS`` per run of the recipe's
    epochs, the same for every trial of a study so that their curves meet at the same steps (each
    report is a write and a read of the study's storage, ~50 ms here: per epoch it would cost a
    short epoch a good part of its time)."""
    return max(1, epochs // PRUNER_CHECKS)


def trial_objective(trainer: Trainer, space: Space, role: str) -> Callable[[Any], float]:
    """The Optuna objective of ``role``'s study: draw the values, train, report the validation
    metric to the pruner every :func:`report_every` epochs and at the last (the pruner may stop
    the trial), return the last epoch's."""
    import optuna

    every = report_every(trainer.base.train.epochs)

    def objective(trial: optuna.Trial) -> float:
        values = space.sample(trial)
        recipe = trainer.recipe(role, values)

        def epoch_end(epoch: int, value: float) -> None:
            if (epoch + 1) % every and epoch + 1 != recipe.train.epochs:
                return
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: validation {trainer.metric} {value:.4f}")

        started = time.perf_counter()
        try:
            history, _ = trainer.train(recipe, epoch_end)
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)
        return history.val[-1]

    return objective
