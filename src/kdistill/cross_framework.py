"""Any teacher teaches any student: a teacher of another framework (``teacher.backend`` is not
the recipe's ``backend``).

Cached (the default): the teacher lives in a process of its own, so the two frameworks' imports,
threads and device memory never meet (JAX, for one, takes most of a GPU when it starts). That
process first builds the teacher and checks it against the data, writing nothing, and waits; once
the student is checked too, it trains the teacher (or loads ``teacher.path``), saves it beside the
run and caches its outputs to ``OUT/teacher-store``, from which the student distills like from any
soft-target store, in its own framework. One process does both, so the teacher's framework and the
data are loaded once.

Online (``teacher.online``): a PyTorch student runs the teacher on the fly, in the same process
(:mod:`kdistill.torch.foreign`), so every augmented view reaches it.

The teacher's process is ``python -m kdistill.cross_framework``: the recipe (JSON, one line) on
stdin; it answers on stdout, one JSON line: ``{"checked": true}`` or ``{"error": MESSAGE}``; then
one more stdin line, ``{"out": DIR, "resume": BOOL}``, has it train and cache (end of input: it
stops, having written nothing).
Where two frameworks share a GPU, JAX and TensorFlow are asked to take memory as they need it
(:data:`SHARE_DEVICES`, unless set already) rather than most of the device up front.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any


from kdistill import backends
from kdistill.data import load_task_data
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.ranks import world_size
from kdistill.recipe import Recipe, TeacherConfig, recipe_from_dict
from kdistill.store import MANIFEST
from kdistill.store.cache import cache_teacher
from kdistill.store.writer import atomic_write
from kdistill.training import History

STORE_DIR = "teacher-store"
# two frameworks on one GPU: neither may take most of its memory up front (JAX and TensorFlow do by default)
SHARE_DEVICES = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
SUMMARY = "foreign-teacher.json"  # in OUT/checkpoints: what the teacher's process reports back


def student_side(recipe: Recipe, out: Path) -> Recipe:
    """The recipe as the student's framework runs it: the teacher is the store in ``out``."""
    return recipe.model_copy(update={"teacher": TeacherConfig(store=str(out / STORE_DIR))})


def share_devices() -> None:
    """Ask JAX and TensorFlow (unless the user already chose) to take GPU memory as they need it,
    so that a student and a teacher of two frameworks fit on one device; set before either starts."""
    for name, value in SHARE_DEVICES.items():
        os.environ.setdefault(name, value)


def build_teacher(recipe: Recipe, data: TaskData) -> Any:
    """The teacher, built in its framework (imported now) and checked against the data."""
    from kdistill.teacher import Teacher

    backend = backends.load(recipe.teacher.backend, field="teacher.backend")
    teacher_recipe = recipe.in_teacher_framework()
    return Teacher(teacher_recipe, data, backend, backend.device(teacher_recipe.train.device))


def online_teacher(recipe: Recipe, data: TaskData) -> Any:
    """The teacher as the student's online teacher, in this process (the student backend's
    ``foreign`` module: :mod:`kdistill.torch.foreign`)."""
    share_devices()
    return backends.import_module(recipe.backend, "foreign").OnlineForeignTeacher(build_teacher(recipe, data))


@dataclasses.dataclass
class TrainedTeacher:
    """What the teacher's process reports: its file, parameter count and training history."""

    path: Path
    parameters: int
    history: History | None


class CachedForeignTeacher:
    """``__init__`` has the teacher built and checked in its own process (nothing written), which
    then waits; :meth:`cache` has it trained (or loaded) and its outputs written to
    ``OUT/teacher-store``; :meth:`close` (or garbage collection) stops a process never asked to."""

    def __init__(self, recipe: Recipe):
        if world_size() > 1:
            raise KdistillError(f"teacher.backend: {recipe.teacher.backend!r} teachers are cached in one process; "
                                "run without --nproc, or cache it first (kdistill cache) and give teacher.store")
        self.recipe = recipe
        share_devices()  # before the student's framework starts here, and inherited by the teacher's process
        # the teacher's own output (progress, warnings, a traceback) goes to this process's stderr
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        self._process = subprocess.Popen([sys.executable, "-m", "kdistill.cross_framework"], env=environment,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._closed = weakref.finalize(self, _stop, self._process)
        answer = self._exchange(recipe.model_dump(mode="json"))
        if "checked" not in answer:
            self.close()
            raise KdistillError(answer.get("error") or f"teacher.backend {recipe.teacher.backend!r}: checking the "
                                f"teacher failed (exit code {self._process.returncode}; its error is above)")

    def cache(self, out: Path, resume: bool) -> TrainedTeacher:
        """Train the teacher (resuming from its checkpoint) or take ``teacher.path``, then cache
        its outputs for every sample to ``out/teacher-store``; kept as it is when resuming a run
        whose store is complete."""
        self._exchange({"out": str(out), "resume": resume})
        self.close()
        if self._process.returncode != 0:
            raise KdistillError(f"teacher.backend {self.recipe.teacher.backend!r}: training or caching the teacher "
                                f"failed in its process (its error is above); {out} keeps what was finished: "
                                f"resume with --out {out} --resume")
        summary = json.loads((out / "checkpoints" / SUMMARY).read_text())
        history = None if summary["history"] is None else History(**summary["history"])
        return TrainedTeacher(Path(summary["path"]), summary["parameters"], history)

    def close(self) -> None:
        """End the teacher's input and wait for its process to stop."""
        self._closed()

    def _exchange(self, message: dict) -> dict:
        """Send ``message`` (one JSON line) to the teacher's process; its answer line, or ``{}``
        where it stopped without one."""
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:  # it stopped already: its error is on stderr
            return {}
        answer = self._process.stdout.readline()
        return json.loads(answer) if answer else {}


def _stop(process: subprocess.Popen) -> None:
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    process.wait()
    process.stdout.close()


def _cache_in_this_process(recipe: Recipe, data: TaskData, out: Path, resume: bool) -> None:
    """The teacher's process: train (or load) the teacher, cache it, report to ``OUT/checkpoints``."""
    teacher_recipe = recipe.in_teacher_framework()
    teacher = build_teacher(recipe, data)
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    teacher_file, history = teacher.prepare(out, checkpoints, resume)
    store = out / STORE_DIR
    if not (resume and (store / MANIFEST).exists()):
        trained = teacher_recipe.model_copy(update={"teacher": teacher_recipe.teacher.model_copy(
            update={"path": str(teacher_file)})})
        cache_teacher(trained, data, store, teacher.backend, overwrite=not resume)
    summary = {"path": str(teacher_file), "parameters": teacher.parameters,
               "history": None if history is None else dataclasses.asdict(history)}
    atomic_write(checkpoints / SUMMARY, json.dumps(summary).encode())


def main() -> int:
    """The teacher's process (:class:`CachedForeignTeacher`): check, answer, then cache if asked."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever the teacher prints goes to stderr

    def answer(message: dict) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    try:
        recipe = recipe_from_dict(json.loads(sys.stdin.readline()))
        data = load_task_data(recipe.data, recipe.task)
        build_teacher(recipe, data)
    except KdistillError as error:
        answer({"error": str(error)})
        return 2
    answer({"checked": True})
    request = sys.stdin.readline()
    if not request:  # nothing more asked: nothing is written
        return 0
    request = json.loads(request)
    try:
        _cache_in_this_process(recipe, data, Path(request["out"]), request["resume"])
    except KdistillError as error:
        print(f"kdistill: error: {error}", file=sys.stderr)
        return 2
    answer({"cached": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
