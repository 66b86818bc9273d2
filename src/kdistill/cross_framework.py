"""Any teacher teaches any student: a teacher of another framework (``teacher.backend`` is not
the recipe's ``backend``) is built and checked in its own framework, trained there (or loaded
from ``teacher.path``), and its outputs cached to ``OUT/teacher-store``; the student then
distills from that store like from any soft-target store, in its own framework. With
``teacher.online`` a PyTorch student runs it per batch instead (:mod:`kdistill.torch.foreign`).

Both frameworks live in the one ``kdistill run`` process; the teacher's framework is imported
only when the recipe names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdistill.backend_common import import_backend
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.ranks import world_size
from kdistill.recipe import Recipe, TeacherConfig
from kdistill.store import MANIFEST
from kdistill.store.cache import cache_teacher
from kdistill.training import History

STORE_DIR = "teacher-store"


def student_side(recipe: Recipe, out: Path) -> Recipe:
    """The recipe as the student's framework runs it: the teacher is the store in ``out``."""
    return recipe.model_copy(update={"teacher": TeacherConfig(store=str(out / STORE_DIR))})


class ForeignTeacher:
    """``__init__`` builds the teacher in its framework and checks it against the data (nothing
    trained or written); :meth:`cache` trains (or loads) it and writes ``OUT/teacher-store``."""

    def __init__(self, recipe: Recipe, data: TaskData):
        if world_size() > 1:
            raise KdistillError(f"teacher.backend: {recipe.teacher.backend!r} teachers are cached in one process; "
                                "run without --nproc, or cache it first (kdistill cache) and give teacher.store")
        self.recipe = recipe.in_teacher_framework()
        self.data = data
        self.backend = import_backend(recipe.teacher.backend, "cache")
        self.teacher = self.backend.build_teacher(self.recipe, data)

    def online(self) -> Any:
        """The teacher as a PyTorch student's online teacher (:mod:`kdistill.torch.foreign`)."""
        return import_backend("torch", "foreign").OnlineForeignTeacher(self.teacher)

    def cache(self, out: Path, resume: bool) -> tuple[Path, History | None]:
        """Train the teacher (resuming from its checkpoint) or take ``teacher.path``, then cache
        its outputs for every sample to ``out/teacher-store`` — kept as it is when resuming a run
        whose store is complete. Returns the teacher's file and training history (None if loaded)."""
        checkpoints = out / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        teacher_file, history = self.teacher.prepare(out, checkpoints, resume)
        store = out / STORE_DIR
        if not (resume and (store / MANIFEST).exists()):
            trained = self.recipe.model_copy(update={"teacher": self.recipe.teacher.model_copy(
                update={"path": str(teacher_file)})})
            cache_teacher(trained, self.data, store, self.backend.teacher_predict, overwrite=not resume)
        return teacher_file, history
