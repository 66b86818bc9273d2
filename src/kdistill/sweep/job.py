"""``kdistill sweep``: tune distillation against an equally tuned scratch twin.

Everything is checked before any work starts (the recipe, the space, the directory). Then, in the
sweep directory and under its lock: the teacher is trained or cached once
(:func:`kdistill.sweep.objective.shared_teacher`); the distilled study runs its trials, then the
scratch twin's study as many (:mod:`kdistill.sweep.study`); the best settings of each train with
3 seeds and are scored once on the test split (each score kept in the study, so a rerun does not
train it again); the report is written (:mod:`kdistill.sweep.report`). ``sweep.json`` is written
last and ``INCOMPLETE`` marks a sweep under way or interrupted: rerunning the same command
continues it, and a larger ``--trials`` extends a finished one.

A sweep writes only into a new or empty directory or a previous sweep's of the same recipe and space.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from kdistill.data import TaskData, load_task_data
from kdistill.errors import KdistillError, reading, writing
from kdistill.lock import LOCK_NAME, exclusive
from kdistill.recipe import Recipe
from kdistill.store.for_run import open_store_for
from kdistill.sweep.objective import ROLES, STORE_DIR, Trainer, saved_teacher, shared_teacher
from kdistill.sweep.report import PLOTS, verdict, write_sweep_report
from kdistill.sweep.space import LOSS_SET, Space, apply, load_space, losses_on
from kdistill.sweep.study import DATABASE, finished, run_study

MARKER = "INCOMPLETE"
SEEDS = 3
"""Seeds of the final comparison: the recipe's train.seed and the next two."""
SWEEP_FILES = re.compile(
    rf"(recipe\.yaml|space\.json|{re.escape(DATABASE)}(-journal|-wal|-shm)?|{MARKER}|best\.yaml|trials\.csv|"
    rf"sweep\.(md|json)|{'|'.join(re.escape(plot) for plot in PLOTS)}|teacher\.(safetensors|json|keras))(\.tmp)?"
)
"""The files a sweep writes at the top of its directory; besides them ``checkpoints/`` (the
teacher's) and ``teacher-store/``."""
SWEEP_DIRS = ("checkpoints", STORE_DIR)


def _foreign(directory: Path) -> list[str]:
    return [entry.name for entry in sorted(directory.iterdir())
            if not (entry.is_file() and (SWEEP_FILES.fullmatch(entry.name) or entry.name == LOCK_NAME))
            and not (entry.is_dir() and entry.name in SWEEP_DIRS)]


def sweep_dir(recipe: Recipe, out: str | Path | None) -> Path:
    """``--out``, else ``runs/sweep-NAME-TIMESTAMP``; refused when it holds files no sweep writes."""
    if out is None:
        return Path("runs") / f"sweep-{recipe.name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise KdistillError(f"--out {str(path)!r} exists and is not a directory")
    if path.is_dir():
        foreign = _foreign(path)
        if foreign:
            raise KdistillError(f"--out {str(path)!r} holds {len(foreign)} entr{'ies' if len(foreign) > 1 else 'y'} "
                                f"kdistill sweep did not write (e.g. {foreign[0]!r}); a sweep writes into a new or empty "
                                "directory or a previous sweep's: give another --out, or move those out")
    return path


def _check_same(directory: Path, recipe: Recipe, space: Space) -> None:
    """A previous sweep in ``directory`` continues only with the same recipe and space."""
    for name, current in (("recipe.yaml", recipe.model_dump(mode="json")), ("space.json", space.to_dict())):
        stored_file = directory / name
        if not stored_file.exists():
            continue
        with reading(stored_file, "a file of a kdistill sweep", field="--out"):
            stored = yaml.safe_load(stored_file.read_text())
        if stored != json.loads(json.dumps(current)):
            what = "recipe" if name == "recipe.yaml" else "search space"
            raise KdistillError(f"--out {directory}: it holds a sweep of another {what} ({stored_file}); continue it "
                                f"with the same recipe and --space, or give another --out")


def _final(study: Any, trainer: Trainer, role: str, values: dict[str, Any], seeds: list[int]) -> list[float]:
    """The test metric of the best settings at each seed, trained once each (kept in the study)."""
    best = study.best_trial.number
    for seed in seeds:
        if f"test/{best}/{seed}" not in study.user_attrs:
            value, _ = trainer.test_metric(trainer.recipe(role, {**values, "train.seed": seed}))
            study.set_user_attr(f"test/{best}/{seed}", value)
    scores = study.user_attrs
    return [scores[f"test/{best}/{seed}"] for seed in seeds]


def best_recipe(recipe: Recipe, values: dict[str, Any], directory: Path) -> Recipe:
    """The recipe with the best distilled values, taught by the sweep's own teacher when it trained one."""
    best = apply(recipe, values).model_copy(update={"name": f"{recipe.name}-best"})
    teacher = saved_teacher(directory)
    if teacher is not None and recipe.teacher.store is None and recipe.teacher.path is None:
        best = best.model_copy(update={"teacher": best.teacher.model_copy(update={"path": str(teacher.resolve())})})
    return best


class Sweep:
    """A sweep checked and ready (:func:`prepare`): nothing trained or written yet."""

    def __init__(self, recipe: Recipe, space: Space, trials: int, directory: Path, jobs: int,
                 budget_minutes: float | None, data: TaskData | None = None):
        self.recipe, self.space, self.trials, self.directory = recipe, space, trials, directory
        self.jobs, self.budget_minutes = jobs, budget_minutes
        self.given_data = data is not None
        self.data = load_task_data(recipe.data, recipe.task) if data is None else data
        if recipe.teacher.store is not None:  # every loss a trial may turn on must find what it reads
            open_store_for(apply(recipe, {LOSS_SET: "+".join(losses_on(recipe, space))}), self.data)

    def execute(self) -> tuple[Path, dict[str, Any]]:
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        with exclusive(directory, "--out", "kdistill sweep"):
            _check_same(directory, self.recipe, self.space)
            marker = directory / MARKER
            with writing(marker, "this file"):
                marker.write_text("kdistill sweep in progress (or interrupted); sweep.json is written last; "
                                  "rerun the same command to continue\n")
            (directory / "sweep.json").unlink(missing_ok=True)
            for name, text in (("recipe.yaml", self.recipe.to_yaml()),
                               ("space.json", json.dumps(self.space.to_dict(), indent=2))):
                with writing(directory / name, "this file"):
                    (directory / name).write_text(text)
            try:
                summary = self._execute(directory)
            except BaseException as error:
                with contextlib.suppress(OSError):
                    marker.write_text(f"kdistill sweep failed: {type(error).__name__}: {error}\n"
                                      "the finished trials are kept: rerun the same command to continue\n")
                raise
            marker.unlink()
        return directory, summary

    def _execute(self, directory: Path) -> dict[str, Any]:
        from optuna.trial import TrialState

        started = time.monotonic()
        (directory / "checkpoints").mkdir(exist_ok=True)
        base = shared_teacher(self.recipe, self.data, directory)
        base = base.model_copy(update={"train": base.train.model_copy(update={"progress": False})})
        trainer = Trainer(base, self.data)
        spaces = {"distilled": self.space, "scratch": self.space.for_scratch()}
        seconds = None
        if self.budget_minutes is not None:  # half of what is left for the distilled study
            seconds = max(1.0, (self.budget_minutes * 60 - (time.monotonic() - started)) / 2)
        studies = {"distilled": run_study(directory, "distilled", spaces["distilled"], self.trials, self.jobs,
                                          seconds, trainer, self.given_data)}
        target = min(self.trials, len(finished(studies["distilled"])))  # the twin gets as many trials
        studies["scratch"] = run_study(directory, "scratch", spaces["scratch"], target, self.jobs, None, trainer,
                                       self.given_data)
        seeds = [self.recipe.train.seed + offset for offset in range(SEEDS)]
        best, test = {}, {"seeds": seeds}
        for role in ROLES:
            study = studies[role]
            if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                raise KdistillError(f"sweep: no {role} trial finished (all pruned or failed: see {directory / DATABASE}); "
                                    "rerun with more --trials or a narrower --space")
            values = spaces[role].decode(study.best_trial.params)
            best[role] = {"number": study.best_trial.number, "value": study.best_value, "params": values}
            test[role] = _final(study, trainer, role, values, seeds)
        recipe_file = directory / "best.yaml"
        with writing(recipe_file, "this file"):
            recipe_file.write_text(best_recipe(self.recipe, best["distilled"]["params"], directory).to_yaml())
        summary = {"recipe": self.recipe.name, "backend": self.recipe.backend, "task": self.recipe.task,
                   "metric": trainer.metric, "trials": {role: len(finished(studies[role])) for role in ROLES},
                   "space": self.space.to_dict(), "best": best, "test": test,
                   "verdict": verdict(trainer.metric, test, target)}
        return write_sweep_report(directory, summary, studies, spaces, next(iter(self.recipe.losses)))


def prepare(recipe: Recipe, trials: int, space_file: str | Path | None = None, out: str | Path | None = None,
            jobs: int = 1, budget_minutes: float | None = None, data: TaskData | None = None) -> Sweep:
    """Check everything and load the data (``data``: the splits to use instead of the recipe's
    ``data`` section, as :class:`kdistill.pipeline.Pipeline` takes them): may fail, writes nothing."""
    if trials < 1:
        raise KdistillError(f"--trials: {trials} must be >= 1")
    if jobs < 1:
        raise KdistillError(f"--jobs: {jobs} must be >= 1")
    if budget_minutes is not None and not budget_minutes > 0:
        raise KdistillError(f"--budget-minutes: {budget_minutes} must be > 0")
    space = load_space(recipe, space_file)
    return Sweep(recipe, space, trials, sweep_dir(recipe, out), jobs, budget_minutes, data)


def sweep(recipe: Recipe, trials: int, space_file: str | Path | None = None, out: str | Path | None = None,
          jobs: int = 1, budget_minutes: float | None = None, data: TaskData | None = None) -> tuple[Path, dict[str, Any]]:
    """Run a sweep end to end; returns its directory and summary (``sweep.json``)."""
    return prepare(recipe, trials, space_file, out, jobs, budget_minutes, data).execute()
