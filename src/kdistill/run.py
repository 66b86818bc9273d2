"""``kdistill run``: validate, build and check everything, then train and write the report.

Nothing is written before every check has passed. While a run is under way its output directory
holds an ``INCOMPLETE`` file (with the error, if it failed); ``report.json`` is written last, so
a directory with ``report.json`` and no ``INCOMPLETE`` is a finished run.

A run writes only into a new or empty directory or a previous run's: one holding a file no run
writes (:func:`foreign_files`) is refused, and a fresh start deletes only files of the names a
run writes. While it writes, the run holds the directory's lock (:mod:`kdistill.lock`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import os
import platform
import re
from pathlib import Path

import yaml

from kdistill.cross_framework import (
    STORE_DIR,
    SUMMARY,
    CachedForeignTeacher,
    TrainedTeacher,
    online_teacher,
    student_side,
)
from kdistill.data import load_task_data
from kdistill.errors import KdistillError, WriteRefused, reading, writing
from kdistill.export.exporter import EXPORT_DIR, check_request, export_finished, remove_exports
from kdistill.lock import LOCK_NAME, exclusive
from kdistill.pipeline import Pipeline
from kdistill.ranks import is_main_process
from kdistill.recipe import Recipe
from kdistill.report.results import ModelResult
from kdistill.report.write import write_report
from kdistill.store.for_run import open_store_for
from kdistill.store.writer import foreign_files as foreign_store_files
from kdistill.store.writer import remove_store
from kdistill.training import checkpoint

MARKER = "INCOMPLETE"
RUN_FILE = re.compile(r"report\..+|recipe\.yaml|INCOMPLETE|curves\.png(\.tmp)?|student\..+|teacher\..+")
"""The files a run writes at the top of its directory (models and temporary files included)."""
RUN_DIRS = ("checkpoints", STORE_DIR, "logs", EXPORT_DIR)
"""The directories a run writes: checkpoints, a foreign teacher's store, the training events, the exports."""
CHECKPOINT_FILE = re.compile(
    rf"((teacher|distilled|scratch)\.ckpt\.(safetensors|json)|scratch\.(safetensors|json|keras)|{re.escape(SUMMARY)})"
    r"(\.tmp)?|scratch\.tmp\.keras"
)
"""The files a run writes in ``checkpoints/`` (:mod:`kdistill.training.checkpoint`, the saved
scratch twin, a foreign teacher's summary), temporary names included: all a fresh start deletes there."""
FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
"""The errors of a write that the disk refused: a run stopped by one is reported by file."""


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
    check_output_dir(path, resume, overwrite)
    return path


def check_output_dir(path: Path, resume: bool, overwrite: bool) -> None:
    """``path`` can be written and holds nothing a run would lose or mix with: no finished run
    (unless ``overwrite``), no file a run does not write; with ``resume``, an interrupted run."""
    if path.exists() and not path.is_dir():
        raise KdistillError(f"--out {str(path)!r} exists and is not a directory")
    check_writable(path)
    finished = (path / "report.json").exists() and not (path / MARKER).exists()
    if finished and not overwrite:
        raise KdistillError(f"--out {str(path)!r} already holds a finished run; pick another directory or pass --overwrite")
    if resume and not path.is_dir():
        raise KdistillError(f"--resume: {str(path)!r} does not exist; nothing to resume")
    if not path.is_dir():
        return
    if resume:  # a planted pickle is named as what it pretends to be, unopened
        checkpoint.refuse_foreign(path / "checkpoints")
    foreign = foreign_files(path)
    if foreign:
        raise KdistillError(
            f"--out {str(path)!r} holds {len(foreign)} file{'s' if len(foreign) > 1 else ''} kdistill did not write "
            f"(e.g. {foreign[0]!r}); a run writes into a new or empty directory or a previous kdistill run's "
            "(--overwrite for a finished one, --resume for an interrupted one): give another --out, or move those out"
        )


def check_writable(path: Path) -> None:
    """``path``, or the directory it would be created in, can be written into."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise KdistillError(f"--out {str(path)!r} cannot be created: {str(existing)!r} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY
        why = "is on a read-only file system" if read_only else "is not writable (permission denied)"
        raise KdistillError(f"--out {str(path)!r} cannot be written: {str(existing)!r} {why}; "
                            "give a directory you can write")


def foreign_files(directory: Path) -> list[str]:
    """The files and directories in a run's ``directory`` that no run wrote, relative to it."""
    found = []
    for entry in sorted(directory.iterdir()):
        own_dir = entry.name in RUN_DIRS and entry.is_dir() and not entry.is_symlink()
        if own_dir and entry.name == "checkpoints":
            found += [f"checkpoints/{item.name}" for item in sorted(entry.iterdir()) if not _own_checkpoint(item)]
        elif own_dir and entry.name == STORE_DIR:
            found += [str(item.relative_to(directory)) for item in foreign_store_files(entry)]
        elif not own_dir and not (entry.is_file() and (RUN_FILE.fullmatch(entry.name) or entry.name == LOCK_NAME)):
            found.append(entry.name)
    return found


def _own_checkpoint(entry: Path) -> bool:
    return bool(CHECKPOINT_FILE.fullmatch(entry.name)) and entry.is_file() and not entry.is_symlink()


def _remove_previous(directory: Path) -> None:
    """A fresh start: delete what an earlier run left in ``checkpoints/`` and ``teacher-store/``,
    by name (nothing else is there: :func:`check_output_dir` refused it)."""
    checkpoints, store = directory / "checkpoints", directory / STORE_DIR
    for entry in sorted(checkpoints.iterdir()) if checkpoints.is_dir() and not checkpoints.is_symlink() else ():
        if _own_checkpoint(entry):
            entry.unlink()
    if store.is_dir() and not store.is_symlink():
        remove_store(store)
    remove_exports(directory)


def check_same_recipe(directory: Path, recipe: Recipe, resume: bool) -> None:
    """--resume continues only the run it was: the stored recipe must equal this one."""
    stored_file = directory / "recipe.yaml"
    if not resume or not stored_file.exists():
        return
    with reading(stored_file, "the recipe of a kdistill run", field="--resume"):
        stored = yaml.safe_load(stored_file.read_text())
    if not isinstance(stored, dict):
        raise KdistillError(f"--resume: {stored_file} is not the recipe of a kdistill run; start afresh in another --out")
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
    overwrite: bool = False

    def execute(self) -> tuple[Path, dict]:
        """Train, measure and write the report; returns the output directory and the report. The
        main process holds the directory's lock throughout and checks it again under the lock."""
        directory, main = self.directory, is_main_process()  # in a data-parallel job, rank 0 alone writes
        if not main:
            directory.mkdir(parents=True, exist_ok=True)
            return self._execute(directory, main)
        with exclusive(directory, "--out"):
            check_output_dir(directory, self.resume, self.overwrite)  # another run may have written it since
            check_same_recipe(directory, self.recipe, self.resume)
            directory, report = self._execute(directory, main)
            output = self.recipe.output
            if output.export:  # the run is finished: a failed export leaves it so, to export again
                try:
                    report = export_finished(directory, self.recipe, output.export, output.quantize)
                except KdistillError as error:
                    raise KdistillError(f"{error}\nthe run in {directory} is finished; export it again with kdistill "
                                        f"export {directory} --format {' '.join(output.export)}") from None
            return directory, report

    def _execute(self, directory: Path, main: bool) -> tuple[Path, dict]:
        recipe, data, store = self.recipe, self.data, self.store
        marker = directory / MARKER
        try:
            if main:
                with writing(marker, "this file"):
                    marker.write_text("kdistill run in progress (or interrupted); report.json is written last\n")
                with writing(directory / "recipe.yaml", "this file"):
                    (directory / "recipe.yaml").write_text(recipe.to_yaml())
                for stale in ("report.json", "report.md"):
                    (directory / stale).unlink(missing_ok=True)
                if not self.resume:  # a fresh start: nothing of an interrupted run may be taken for this one's
                    _remove_previous(directory)
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
                         "transfer": 0 if data.transfer is None else len(data.transfer),
                         "skipped": sum(data.meta.get(name, {}).get("skipped", 0)
                                        for name in ("bad_samples", "transfer_bad_samples"))}
            report = write_report(directory, recipe, _environment(recipe, self.pipeline), data_info, results)
        except BaseException as error:
            if not main:
                raise
            refused = _refused_write(error, directory)
            with contextlib.suppress(OSError):  # a full disk may refuse this too: the marker then says "in progress"
                marker.write_text(f"kdistill run failed: {type(refused or error).__name__}: {refused or error}\n"
                                  f"resume with: kdistill run RECIPE --out {directory} --resume\n")
            if refused is not None:
                raise refused from None
            raise
        marker.unlink()
        return directory, report


def _refused_write(error: BaseException, directory: Path) -> KdistillError | None:
    """A write the disk refused (full, over quota, read-only) as a named error giving the file
    (every writer of a run names its file: :func:`kdistill.errors.writing`) and how to go on;
    None for any other error."""
    if isinstance(error, WriteRefused):
        named, code = error.path, error.code
    elif isinstance(error, OSError) and not isinstance(error, KdistillError):
        named, code = error.filename, error.errno
    else:
        return None
    if code not in FULL:
        return None
    remedy = "make it writable" if code == errno.EROFS else "free some space"
    return KdistillError(f"{named or directory}: cannot write this file ({os.strerror(code)}); the run stopped and "
                         f"{directory / MARKER} holds this error: {remedy}, then resume with "
                         f"kdistill run RECIPE --out {directory} --resume")


def prepare(recipe: Recipe, out: str | Path | None = None, resume: bool = False,
            overwrite: bool = False) -> PreparedRun:
    """Load the data and build and check every model (and the store): may fail, writes nothing."""
    directory = output_dir(recipe, out, resume, overwrite)
    data = load_task_data(recipe.data, recipe.task)
    cached_foreign = None
    store = open_store_for(recipe, data) if recipe.teacher.store is not None else None
    try:
        if not recipe.foreign_teacher:
            pipeline = Pipeline(recipe, data)
        elif recipe.teacher.online:  # runs inside the student's pipeline, handed over by DLPack
            pipeline = Pipeline(recipe, data, teacher=online_teacher(recipe, data))
        else:  # checked in its own process now, which waits to train and cache it before the student trains
            cached_foreign = CachedForeignTeacher(recipe)
            pipeline = Pipeline(student_side(recipe, directory), data)
        check_same_recipe(directory, recipe, resume)
        if recipe.output.export:
            check_request(recipe, recipe.output.export, recipe.output.quantize, None)
    except BaseException:
        if cached_foreign is not None:  # refused: the teacher's process stops, having written nothing
            cached_foreign.close()
        raise
    return PreparedRun(recipe, directory, resume, data, pipeline, store, cached_foreign, overwrite)


def run(recipe: Recipe, out: str | Path | None = None, resume: bool = False, overwrite: bool = False) -> tuple[Path, dict]:
    """Run a recipe end to end; returns the output directory and the report."""
    return prepare(recipe, out, resume, overwrite).execute()
