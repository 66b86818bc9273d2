"""``kdistill run``: validate, build and check everything, then train and write the report.

Nothing is written before every check has passed. While a run is under way its output directory
holds an ``INCOMPLETE`` file (with the error, if it failed); ``report.json`` is written last, so
a directory with ``report.json`` and no ``INCOMPLETE`` is a finished run.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import shutil
from pathlib import Path

import yaml

from kdistill.cross_framework import STORE_DIR, CachedForeignTeacher, TrainedTeacher, online_teacher, student_side
from kdistill.data import load_task_data
from kdistill.errors import KdistillError
from kdistill.pipeline import Pipeline
from kdistill.ranks import is_main_process
from kdistill.recipe import Recipe
from kdistill.report.results import ModelResult
from kdistill.report.write import write_report
from kdistill.store.for_run import open_store_for

MARKER = "INCOMPLETE"

def _with_teacher_training(results: list[ModelResult], teacher: TrainedTeacher) -> list[ModelResult]:
    """A foreign teacher is scored from its store; add what its own framework knew of it."""
    history = teacher.history
    return [dataclasses.replace(result, parameters=teacher.parameters, size_bytes=teacher.path.stat().st_size,
                                val_history=[] if history is None else list(history.val),
                                train_seconds=None if history is None else history.train_seconds)
            if result.role == "teacher" else result for result in results]


def _environment(recipe: Recipe, pipeline) -> dict:
    """Where the run happened: Python, machine, and the backend's own versions and device."""
    return {"python": platform.python_version(), "machine": platform.machine(), "backend": recipe.backend,
            **pipeline.environment()}


def output_dir(recipe: Recipe, out: str | Path | None, resume: bool, overwrite: bool) -> Path:
    """Where the run writes: --out, else output.dir, else runs/NAME-TIMESTAMP. A finished run is
    never overwritten unless asked; --resume needs a named directory."""
    chosen = out or recipe.output.dir
    if chosen is None:
        if resume:
            raise KdistillError("--resume needs the output directory of the run to resume (--out DIR)")
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{recipe.name}-{stamp}"
    path = Path(chosen)
    if path.exists() and not path.is_dir():
        raise KdistillError(f"--out {str(path)!r} exists and is not a directory")
    finished = (path / "report.json").exists() and not (path / MARKER).exists()
    if finished and not overwrite:
        raise KdistillError(f"--out {str(path)!r} already holds a finished run; pick another directory or pass --overwrite")
    if resume and not path.is_dir():
        raise KdistillError(f"--resume: {str(path)!r} does not exist; nothing to resume")
    return path


def _check_same_recipe(directory: Path, recipe: Recipe, resume: bool) -> None:
    """--resume continues only the run it was: the stored recipe must equal this one."""
    stored_file = directory / "recipe.yaml"
    if not resume or not stored_file.exists():
        return
    stored = yaml.safe_load(stored_file.read_text())
    current = recipe.model_dump(mode="json")
    changed = [key for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key)]
    if changed:
        raise KdistillError(
            f"--resume: the recipe differs from the interrupted run's {stored_file} in section(s) "
            f"{', '.join(changed)}; resume with the same recipe, or start afresh in another --out"
        )


@dataclasses.dataclass
class PreparedRun:
    """A run with every model built and checked and nothing written yet (:func:`prepare`)."""

    recipe: Recipe
    directory: Path
    resume: bool
    data: object
    pipeline: object
    store: object  # the opened teacher.store, if the recipe gives one
    cached_foreign: CachedForeignTeacher | None  # a teacher of another framework, cached to OUT/teacher-store first

    def execute(self) -> tuple[Path, dict]:
        """Train, measure and write the report; returns the output directory and the report."""
        recipe, directory, data, store = self.recipe, self.directory, self.data, self.store
        directory.mkdir(parents=True, exist_ok=True)
        marker = directory / MARKER
        main = is_main_process()  # in a data-parallel job, rank 0 alone writes
        if main:
            (directory / "recipe.yaml").write_text(recipe.to_yaml())
            marker.write_text("kdistill run in progress (or interrupted); report.json is written last\n")
            for stale in ("report.json", "report.md"):
                (directory / stale).unlink(missing_ok=True)
            if not self.resume:  # a fresh start: nothing of an interrupted run may be taken for this one's
                for stale in ("checkpoints", STORE_DIR):
                    shutil.rmtree(directory / stale, ignore_errors=True)
        try:
            if self.cached_foreign is not None:  # the teacher, in its own framework, writes the store the student reads
                trained_teacher = self.cached_foreign.cache(directory, self.resume)
                store = open_store_for(student_side(recipe, directory), data)
            results = self.pipeline.execute(directory, self.resume, store)
            if self.cached_foreign is not None:
                results = _with_teacher_training(results, trained_teacher)
            if not main:
                return directory, {}
            data_info = {"name": data.name, "fingerprint": data.fingerprint(), "train": len(data.train),
                         "val": len(data.val), "test": len(data.test),
                         "transfer": 0 if data.transfer is None else len(data.transfer)}
            report = write_report(directory, recipe, _environment(recipe, self.pipeline), data_info, results)
        except BaseException as error:
            if not main:
                raise
            marker.write_text(f"kdistill run failed: {type(error).__name__}: {error}\n"
                              f"resume with: kdistill run RECIPE --out {directory} --resume\n")
            raise
        marker.unlink()
        return directory, report


def prepare(recipe: Recipe, out: str | Path | None = None, resume: bool = False,
            overwrite: bool = False) -> PreparedRun:
    """Load the data and build and check every model (and the store): may fail, writes nothing."""
    directory = output_dir(recipe, out, resume, overwrite)
    data = load_task_data(recipe.data, recipe.task)
    cached_foreign = None
    store = open_store_for(recipe, data) if recipe.teacher.store is not None else None
    if not recipe.foreign_teacher:
        pipeline = Pipeline(recipe, data)
    elif recipe.teacher.online:  # runs inside the student's pipeline, handed over by DLPack
        pipeline = Pipeline(recipe, data, teacher=online_teacher(recipe, data))
    else:  # checked in its own process now; trained and cached there before the student trains
        cached_foreign = CachedForeignTeacher(recipe)
        pipeline = Pipeline(student_side(recipe, directory), data)
    _check_same_recipe(directory, recipe, resume)
    return PreparedRun(recipe, directory, resume, data, pipeline, store, cached_foreign)


def run(recipe: Recipe, out: str | Path | None = None, resume: bool = False, overwrite: bool = False) -> tuple[Path, dict]:
    """Run a recipe end to end; returns the output directory and the report."""
    return prepare(recipe, out, resume, overwrite).execute()
