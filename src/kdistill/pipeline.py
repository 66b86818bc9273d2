"""The one pipeline of ``kdistill run``, for every backend: build and check the teacher and the
student, train (or load) the teacher, distill the student, train the scratch twin from the
identical initial weights, and measure all three for the report. The backend contributes its
models and its training step (:mod:`kdistill.backends.contract`); the rest is written here once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdistill import backends
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.objective import Objective
from kdistill.ranks import is_main_process
from kdistill.recipe import Recipe
from kdistill.report.embeddings import embedding_metrics
from kdistill.report.latency import BATCH_SIZES
from kdistill.report.metrics import task_metrics
from kdistill.report.results import ModelResult, Trained, results_for
from kdistill.store import StoreReader
from kdistill.store.for_run import check_store_given
from kdistill.teacher import Teacher, check_outputs, probe_rows
from kdistill.training.ahead import ChunkTeacher, by_inputs, decide
from kdistill.training.loop import Fetch, fit


class Pipeline:
    """Two phases: ``__init__`` builds everything and checks it (no files written, nothing
    trained); ``execute`` trains and measures, writing only inside the output directory."""

    def __init__(self, recipe: Recipe, data: TaskData, teacher: Any | None = None):
        """``teacher``: one built already — a teacher of another framework run on the fly
        (``teacher.online``), asked for a chunk of steps' outputs at a time; by default the
        recipe's teacher is built here (none for a store)."""
        self.recipe, self.data = recipe, data
        self.backend = backend = backends.load(recipe.backend)
        self.device = backend.device(recipe.train.device)
        self.offline = recipe.teacher.store is not None
        self.foreign = teacher is not None  # its outputs come per chunk of steps
        self.teacher = teacher or (None if self.offline else Teacher(recipe, data, backend, self.device))
        probe = probe_rows(data)
        with backend.scope(self.device, recipe.train):
            self.student, self.student_spec = backend.build(recipe.student, data, "student", recipe.train.seed, self.device)
            check_outputs(backend, self.student, probe, data, "student", self.device)
            self._check_heads(probe)
            self._check_embedding(probe)
            self.scratch = backend.clone(self.student, self.student_spec, data, probe, self.device)
            objective = Objective.of_recipe(recipe)
            feature_losses = sorted({pair.loss for pair in recipe.features if pair.loss in objective.weights})
            self.ahead = decide(recipe.train.teacher_ahead, self.teacher is not None, feature_losses,
                                "cpu" not in str(self.device).lower())  # an accelerator of any kind
            in_step = None if self.teacher is None or self.foreign or self.ahead.ahead else self.teacher.model
            self.distiller = backend.distiller(self.student, objective, in_step, recipe.features, probe, self.device,
                                               recipe.train.seed)

    def environment(self) -> dict:
        """Versions and device for the report, and whether the teacher ran ahead of the student."""
        ahead = {} if self.teacher is None else {"teacher_ahead": self.ahead.reason}  # none for a store
        return {**self.backend.environment(self.device, self.recipe.train), **ahead}

    def execute(self, out: Path, resume: bool, store: StoreReader | None = None) -> list[ModelResult]:
        """Train teacher (unless given), distilled student and scratch twin; measure them. An
        offline run reads ``store`` (``teacher.store``, opened and checked by the caller). With
        several processes every one trains its share and the main one alone saves and measures."""
        check_store_given(self.offline, store)
        recipe, backend, device = self.recipe, self.backend, self.device
        with backend.job(device), backend.scope(device, recipe.train):
            main = is_main_process()
            checkpoints = out / "checkpoints"
            checkpoints.mkdir(parents=True, exist_ok=True)
            measured: dict[str, tuple[Any, Path | None, object]] = {}
            if self.teacher is not None:
                measured["teacher"] = (self.teacher.model, *self.teacher.prepare(out, checkpoints, resume))
            augment = recipe.data.augment
            history = fit("distilled", backend, self.distiller, self.data, recipe.train, device,
                          checkpoint_stem=checkpoints / "distilled", resume=resume,
                          teacher_outputs=self._teacher_outputs(store), teacher_ahead=self.ahead.ahead, augment=augment,
                          stored_views=None if store is None else store.manifest.views, run_dir=out)
            saved = backend.save(self.student, self.student_spec, out / "student") if main else None
            measured["distilled"] = (self.student, saved, history)
            if recipe.compare.scratch:
                alone = Objective.task_only(recipe.task, recipe.student.heads)
                twin = backend.distiller(self.scratch, alone, None, (), None, device, recipe.train.seed)
                history = fit("scratch", backend, twin, self.data, recipe.train, device,
                              checkpoint_stem=checkpoints / "scratch", resume=resume, augment=augment, run_dir=out)
                saved = backend.save(self.scratch, self.student_spec, checkpoints / "scratch") if main else None
                measured["scratch"] = (self.scratch, saved, history)
            return self._measure(measured, store) if main else []

    def _teacher_outputs(self, store: StoreReader | None) -> ChunkTeacher | Fetch | None:
        """What the loop asks for a chunk's teacher outputs: the store's or a teacher of another
        framework's outputs by sample id, or (run ahead) this framework's trained teacher on the
        chunk's inputs; None: the teacher runs in the step."""
        if store is not None:
            return store.fetch
        if self.foreign:
            return self.teacher.outputs(self.data, self.recipe.data.augment, self.recipe.train.eval_batch_size)
        if self.ahead.ahead:
            return by_inputs(self.backend.frozen_forward(self.teacher.model, self.device), self.data)
        return None

    def _measure(self, measured: dict[str, tuple[Any, Path | None, object]],
                 store: StoreReader | None) -> list[ModelResult]:
        """Test metrics, size, agreement with the teacher, and latency taken side by side
        (:func:`kdistill.report.results.results_for`)."""
        backend, device, x_test = self.backend, self.device, self.data.test.x
        batch_size, workers = self.recipe.train.eval_batch_size, self.recipe.train.workers
        timed = x_test[:max(BATCH_SIZES)]  # the rows the largest latency batch takes (read once when streamed)
        trained = {role: Trained(backend.timed_forward(model, timed, device),
                                 backend.predict(model, x_test, batch_size, device, workers=workers),
                                 self.teacher.parameters if role == "teacher" else backend.count_parameters(model),
                                 weights_file, history,
                                 {} if role == "teacher" and self.foreign else
                                 self._embedding_metrics(model) | self._head_metrics(model, role))
                   for role, (model, weights_file, history) in measured.items()}
        return results_for(self.data, trained, store, self.recipe.compare.latency_repeats)

    def _check_embedding(self, probe: np.ndarray) -> None:
        """``compare.embedding`` names a layer of the student (and of a teacher of this framework):
        checked on ``probe`` before anything trains. A teacher of another framework is not scored."""
        path = self.recipe.compare.embedding
        if path is None:
            return
        models = [self.student, *([self.teacher.model] if self.teacher is not None and not self.foreign else [])]
        for model in models:
            self.backend.embed_array(model, probe, path, len(probe), self.device)

    def _check_heads(self, probe: np.ndarray) -> None:
        """A saved student with a distillation head (``dist_head``) trains as two heads only when
        the recipe says so beside its path; otherwise its training outputs would be read as one."""
        config = self.recipe.student
        if config.path is None or config.heads == 2:
            return
        try:
            self.backend.embed_array(self.student, probe, "dist_head", len(probe), self.device)
        except KdistillError:  # no such layer: a one-head model
            return
        raise KdistillError(f"student.path: {config.path!r} has a distillation head (dist_head); give model: vit and "
                            "kwargs: {distillation_token: true} beside the path so that it trains as two heads")

    def _head_metrics(self, model: Any, role: str) -> dict[str, float]:
        """A two-head model (a distillation token, DeiT) is scored by the mean of its heads, as it
        predicts; each head alone too (``class_head_`` and ``dist_head_`` + the task's metric)."""
        config = self.recipe.teacher if role == "teacher" else self.recipe.student
        if config.heads == 1:
            return {}
        data, batch_size, workers = self.data, self.recipe.train.eval_batch_size, self.recipe.train.workers
        scores = {}
        for prefix, layer in (("class_head", "head"), ("dist_head", "dist_head")):
            outputs = self.backend.embed(model, data.test.x, layer, batch_size, self.device, workers=workers)
            scores |= {f"{prefix}_{name}": value for name, value in task_metrics(data.task, outputs, data.test.y).items()}
        return scores

    def _embedding_metrics(self, model: Any) -> dict[str, float]:
        """Linear-probe and nearest-neighbour accuracy on ``compare.embedding`` (none when unset)."""
        compare, data = self.recipe.compare, self.data
        if compare.embedding is None:
            return {}
        batch_size, workers = self.recipe.train.eval_batch_size, self.recipe.train.workers
        train, test = (self.backend.embed(model, split.x, compare.embedding, batch_size, self.device, workers=workers)
                       for split in (data.train, data.test))
        return embedding_metrics(train, data.train.y, test, data.test.y, compare.neighbours)
