"""Any teacher teaches any student: a teacher of another framework (``teacher.backend`` is not
the recipe's ``backend``).

Cached (the default): the teacher lives in a process of its own, so the two frameworks' imports,
threads and device memory never meet (JAX, for one, takes most of a GPU when it starts). That
process first builds the teacher and checks it against the data, writing nothing; once the
student is checked too, a second one trains the teacher (or loads ``teacher.path``), saves it
beside the run and caches its outputs to ``OUT/teacher-store``, from which the student distills
like from any soft-target store, in its own framework.

Online (``teacher.online``): a PyTorch student runs the teacher on the fly, in the same process
(:mod:`kdistill.torch.foreign`), so every augmented view reaches it.

The teacher's process is ``python -m kdistill.cross_framework check|cache``, the recipe on stdin.
Where two frameworks share a GPU, JAX and TensorFlow are asked to take memory as they need it
(:data:`SHARE_DEVICES`, unless set already) rather than most of the device up front.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

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
    """``__init__`` has the teacher built and checked in its own process (nothing written);
    :meth:`cache` has it trained (or loaded) and its outputs written to ``OUT/teacher-store``."""

    def __init__(self, recipe: Recipe):
        if world_size() > 1:
            raise KdistillError(f"teacher.backend: {recipe.teacher.backend!r} teachers are cached in one process; "
                                "run without --nproc, or cache it first (kdistill cache) and give teacher.store")
        self.recipe = recipe
        share_devices()  # before the student's framework starts here, and inherited by the teacher's process
        found = self._process("check", capture=True)
        if found.returncode != 0:
            errors = [line.removeprefix("kdistill: error: ") for line in found.stderr.splitlines()
                      if line.startswith("kdistill: error: ")]
            raise KdistillError("\n".join(errors) or f"teacher.backend {recipe.teacher.backend!r}: checking the teacher "
                                f"failed (exit code {found.returncode}):\n{found.stderr[-2000:]}")

    def cache(self, out: Path, resume: bool) -> TrainedTeacher:
        """Train the teacher (resuming from its checkpoint) or take ``teacher.path``, then cache
        its outputs for every sample to ``out/teacher-store``; kept as it is when resuming a run
        whose store is complete."""
        if self._process("cache", out, resume).returncode != 0:
            raise KdistillError(f"teacher.backend {self.recipe.teacher.backend!r}: training or caching the teacher "
                                f"failed in its process (its error is above); {out} keeps what was finished: "
                                f"resume with --out {out} --resume")
        summary = json.loads((out / "checkpoints" / SUMMARY).read_text())
        history = None if summary["history"] is None else History(**summary["history"])
        return TrainedTeacher(Path(summary["path"]), summary["parameters"], history)

    def _process(self, command: str, out: Path | None = None, resume: bool = False,
                 capture: bool = False) -> subprocess.CompletedProcess:
        """``python -m kdistill.cross_framework COMMAND`` with the recipe on stdin and this
        process's import path (a factory the recipe names imports there too)."""
        argv = [sys.executable, "-m", "kdistill.cross_framework", command]
        if out is not None:
            argv += ["--out", str(out)] + (["--resume"] if resume else [])
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
        return subprocess.run(argv, input=self.recipe.to_yaml(), text=True, env=environment,
                              stderr=subprocess.PIPE if capture else None, stdout=subprocess.DEVNULL if capture else None)


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


def main(argv: list[str] | None = None) -> int:
    """The teacher's process: ``check`` builds and checks it; ``cache`` trains and caches it."""
    parser = argparse.ArgumentParser(prog="python -m kdistill.cross_framework")
    parser.add_argument("command", choices=("check", "cache"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    try:
        recipe = recipe_from_dict(yaml.safe_load(sys.stdin.read()))
        data = load_task_data(recipe.data, recipe.task)
        if args.command == "check":
            build_teacher(recipe, data)
        else:
            _cache_in_this_process(recipe, data, args.out, args.resume)
    except KdistillError as error:
        print(f"kdistill: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
