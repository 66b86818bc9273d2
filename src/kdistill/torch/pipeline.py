"""The PyTorch side of ``kdistill run``: build and check the models, train (or load) the teacher,
distill the student, train the scratch twin from the identical initial weights, and measure all
three for the report."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import Recipe
from kdistill.report.results import ModelResult, Trained, results_for
from kdistill.store import StoreReader
from kdistill.store.for_run import check_store_given
from kdistill.torch import distributed
from kdistill.torch.distiller import Distiller
from kdistill.torch.models import build_model, count_parameters, save_model
from kdistill.torch.foreign import OnlineForeignTeacher
from kdistill.torch.teacher import Teacher, check_outputs, probe_rows
from kdistill.torch.trainer import fit, predict, tensors


def choose_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise KdistillError("train.device: 'cuda' requested but torch sees no CUDA device (use 'auto' or 'cpu')")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def timed_forwards(models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, Callable[[int], None]]:
    """Per model, an eval-mode forward on the first ``size`` test rows (repeated if too few) that
    returns once the device is done: what :func:`measure_latencies` times."""
    def forward_of(model: nn.Module) -> Callable[[int], None]:
        @torch.inference_mode()
        def forward(size: int) -> None:
            model(x[torch.arange(size, device=x.device) % len(x)])
            if x.is_cuda:
                torch.cuda.synchronize()
        return forward
    for model in models.values():
        model.eval()
    return {role: forward_of(model) for role, model in models.items()}


class TorchPipeline:
    """Two phases: ``__init__`` builds everything and checks it (no files written, nothing
    trained); ``execute`` trains and measures, writing only inside the output directory."""

    def __init__(self, recipe: Recipe, data: TaskData, teacher: Teacher | OnlineForeignTeacher | None = None):
        """``teacher``: one built already, e.g. a teacher of another framework run on the fly
        (``teacher.online``: asked for a chunk of steps' outputs at a time); by default the
        recipe's teacher is built here (none for a store)."""
        self.recipe, self.data = recipe, data
        self.device = distributed.local_device(choose_device(recipe.train.device))
        self.offline = recipe.teacher.store is not None
        self.probe = probe_rows(data, self.device)
        self.teacher = teacher or (None if self.offline else Teacher(recipe, data, self.device, self.probe))
        self.foreign = isinstance(self.teacher, OnlineForeignTeacher)  # its outputs come per chunk of steps
        torch.manual_seed(recipe.train.seed)
        self.student, self.student_spec = build_model(recipe.student, data, "student")
        self.initial_student = copy.deepcopy(self.student.state_dict())
        self.scratch = copy.deepcopy(self.student)  # before the distiller hooks the student's layers
        self.student.to(self.device)
        check_outputs(self.student, self.probe, data, "student")
        self.distiller = Distiller(
            self.student, recipe.task, recipe.weights,
            {name: recipe.loss_settings(name) for name in recipe.losses},
            teacher=None if self.teacher is None or self.foreign else self.teacher.model, features=recipe.features,
            probe=self.probe, offline=self.offline or self.foreign,
        )

    def environment(self) -> dict:
        """Versions and device for the report."""
        return {"torch": torch.__version__, "device": str(self.device), "threads": torch.get_num_threads()}

    def execute(self, out: Path, resume: bool, store: StoreReader | None = None) -> list[ModelResult]:
        """Train teacher (unless given), distilled student and scratch twin; measure them. An
        offline run reads ``store`` (``teacher.store``, opened and checked by the caller). Under
        torchrun every rank trains its share and rank 0 alone saves, measures and returns results."""
        check_store_given(self.offline, store)
        try:
            distributed.setup(self.device)
            results = self._execute(out, resume, store)
            distributed.barrier()  # every rank leaves together: none tears down while rank 0 still measures
            return results
        finally:
            distributed.teardown()

    def _execute(self, out: Path, resume: bool, store: StoreReader | None) -> list[ModelResult]:
        main = distributed.is_main_process()
        checkpoints = out / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        measured: dict[str, tuple[nn.Module, Path, object]] = {}
        if self.teacher is not None:
            measured["teacher"] = (self.teacher.model, *self.teacher.prepare(out, checkpoints, resume))
        augment = self.recipe.data.augment
        teacher_outputs = store.fetch if store is not None else \
            self.teacher.outputs(self.data, augment, self.recipe.train.eval_batch_size) if self.foreign else None
        history = fit("distilled", self.distiller, self.data, self.recipe.train, self.device,
                      checkpoints / "distilled.pt", resume, teacher_outputs, augment,
                      None if store is None else store.manifest.views)
        measured["distilled"] = (self.student, save_model(self.student, self.student_spec, out / "student") if main else None,
                                 history)
        if self.recipe.compare.scratch:
            scratch = self.scratch.to(self.device)
            twin = Distiller(scratch, self.recipe.task, {"task": 1.0})
            history = fit("scratch", twin, self.data, self.recipe.train, self.device, checkpoints / "scratch.pt", resume,
                          augment=augment)
            measured["scratch"] = (scratch, save_model(scratch, self.student_spec, checkpoints / "scratch") if main else None,
                                   history)
        return self._measure(measured, store) if main else []

    def _measure(self, measured: dict[str, tuple[nn.Module, Path, object]], store: StoreReader | None) -> list[ModelResult]:
        """Test metrics, size, agreement with the teacher, and latency taken side by side
        (:func:`kdistill.report.results.results_for`)."""
        x_test = tensors(self.data.test, self.device)[0]
        forwards = timed_forwards({role: model for role, (model, _, _) in measured.items()}, x_test)
        trained = {role: Trained(forwards[role], predict(model, x_test, self.recipe.train.eval_batch_size),
                                 self.teacher.parameters if role == "teacher" else count_parameters(model),
                                 weights_file, history)
                   for role, (model, weights_file, history) in measured.items()}
        return results_for(self.data, trained, store, self.recipe.compare.latency_repeats)
