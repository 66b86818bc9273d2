"""The PyTorch side of ``kdistill run``: build and check the models, train (or load) the teacher,
distill the student, train the scratch twin from the identical initial weights, and measure all
three for the report."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import Recipe, TrainConfig
from kdistill.report.metrics import agreement, task_metrics
from kdistill.report.results import ModelResult
from kdistill.torch.distiller import Distiller
from kdistill.torch.models import build_model, count_parameters, save_model
from kdistill.store import StoreReader
from kdistill.torch.trainer import fit, predict, tensors

TEACHER_SEED_OFFSET = 10_000


def choose_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise KdistillError("train.device: 'cuda' requested but torch sees no CUDA device (use 'auto' or 'cpu')")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def measure_latencies(models: dict[str, nn.Module], x: torch.Tensor, batch_sizes: tuple[int, ...],
                      repeats: int) -> dict[str, dict[str, float]]:
    """Median milliseconds of one eval-mode forward pass per model and batch size.

    The models take turns within every repeat (side by side), so machine noise hits them alike."""
    batches = {size: x[torch.arange(size) % len(x)] for size in batch_sizes}
    timings: dict[str, dict[int, list[float]]] = {role: {size: [] for size in batch_sizes} for role in models}
    for model in models.values():
        model.eval()
    with torch.inference_mode():
        for repeat in range(repeats + 3):  # three warm-up rounds
            for role, model in models.items():
                for size, batch in batches.items():
                    if batch.is_cuda:
                        torch.cuda.synchronize()
                    started = time.perf_counter()
                    model(batch)
                    if batch.is_cuda:
                        torch.cuda.synchronize()
                    if repeat >= 3:
                        timings[role][size].append((time.perf_counter() - started) * 1000)
    return {role: {f"batch_{size}": statistics.median(values) for size, values in by_size.items()}
            for role, by_size in timings.items()}


DENSE_FREE_LOSSES = {"kd", "soft_ce", "hard", "binary_kd"}  # read only the tempered softmax / argmax


def open_store_for(recipe: Recipe, data: TaskData) -> StoreReader:
    """Open ``teacher.store`` and check it fits this run: same data, every training, transfer and
    test id present, the student's class count, and dense logits for losses that read raw values."""
    store = StoreReader(recipe.teacher.store)
    needed = [split.ids for split in (data.train, data.transfer, data.test) if split is not None]
    store.check(ids=np.concatenate(needed), num_classes=data.output_dim, dataset_fingerprint=data.fingerprint(),
                needs_dense=not set(recipe.losses) <= DENSE_FREE_LOSSES)
    return store


class TorchPipeline:
    """Two phases: ``__init__`` builds everything and checks it (no files written, nothing
    trained); ``execute`` trains and measures, writing only inside the output directory."""

    def __init__(self, recipe: Recipe, data: TaskData):
        self.recipe, self.data = recipe, data
        self.device = choose_device(recipe.train.device)
        self.store = None if recipe.teacher.store is None else open_store_for(recipe, data)
        self.teacher = None
        if self.store is None:
            torch.manual_seed(recipe.train.seed + TEACHER_SEED_OFFSET)
            self.teacher, self.teacher_spec = build_model(recipe.teacher, data, "teacher")
            self.teacher.to(self.device)
        torch.manual_seed(recipe.train.seed)
        self.student, self.student_spec = build_model(recipe.student, data, "student")
        self.initial_student = copy.deepcopy(self.student.state_dict())
        self.scratch = copy.deepcopy(self.student)  # before the distiller hooks the student's layers
        self.student.to(self.device)
        self.probe = tensors(data.train.take(np.arange(min(4, len(data.train)))), self.device)[0]
        if self.teacher is not None:
            self._check_output_shape(self.teacher, "teacher")
        self._check_output_shape(self.student, "student")
        self.distiller = Distiller(
            self.student, recipe.task, recipe.weights,
            {name: recipe.loss_settings(name) for name in recipe.losses},
            teacher=self.teacher, features=recipe.features, probe=self.probe, offline=self.store is not None,
        )

    def _check_output_shape(self, model: nn.Module, field: str) -> None:
        model.eval()
        try:
            with torch.no_grad():
                shape = tuple(model(self.probe).shape[1:])
        except Exception as error:  # the user's model rejected the data: say which and why
            raise KdistillError(f"{field}: forward pass on inputs {tuple(self.probe.shape[1:])} failed: {error}") from None
        expected = (self.data.output_dim,)
        if shape != expected:
            raise KdistillError(
                f"{field}: outputs {shape} per sample, but {self.data.name} ({self.data.task}) needs {expected}"
            )

    def _teacher_training(self) -> TrainConfig:
        overrides = self.recipe.teacher.train.model_dump(exclude_none=True)
        seed = self.recipe.train.seed + TEACHER_SEED_OFFSET
        return self.recipe.train.model_copy(update={**overrides, "seed": seed})

    def execute(self, out: Path, resume: bool) -> list[ModelResult]:
        checkpoints = out / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        measured: dict[str, tuple[nn.Module, Path, object]] = {}
        if self.teacher is not None:
            measured["teacher"] = (self.teacher, *self._prepare_teacher(out, checkpoints, resume))
        history = fit("distilled", self.distiller, self.data, self.recipe.train, self.device,
                      checkpoints / "distilled.pt", resume, None if self.store is None else self.store.fetch)
        measured["distilled"] = (self.student, save_model(self.student, self.student_spec, out / "student"), history)
        if self.recipe.compare.scratch:
            scratch = self.scratch.to(self.device)
            twin = Distiller(scratch, self.recipe.task, {"task": 1.0})
            history = fit("scratch", twin, self.data, self.recipe.train, self.device, checkpoints / "scratch.pt", resume)
            measured["scratch"] = (scratch, save_model(scratch, self.student_spec, checkpoints / "scratch"), history)
        return self._measure(measured)

    def _prepare_teacher(self, out: Path, checkpoints: Path, resume: bool) -> tuple[Path, object]:
        """Train the teacher (on resume, a finished teacher's checkpoint restores its weights and
        history without training) unless ``teacher.path`` gave trained weights; then freeze it."""
        teacher_file, history = out / "teacher.safetensors", None
        if self.recipe.teacher.path is not None:
            teacher_file = Path(self.recipe.teacher.path)
        else:
            trainee = Distiller(self.teacher.train(), self.recipe.task, {"task": 1.0})
            self.teacher.requires_grad_(True)
            history = fit("teacher", trainee, self.data, self._teacher_training(), self.device,
                          checkpoints / "teacher.pt", resume)
            save_model(self.teacher, self.teacher_spec, out / "teacher")
        self.teacher.requires_grad_(False).eval()
        return teacher_file, history

    def _measure(self, measured: dict[str, tuple[nn.Module, Path, object]]) -> list[ModelResult]:
        """Test metrics, size, agreement with the teacher, and latency taken side by side. A store
        teacher is measured by its stored test outputs (no model: no size or latency)."""
        x_test = tensors(self.data.test, self.device)[0]
        latencies = measure_latencies({role: model for role, (model, _, _) in measured.items()}, x_test, (1, 256),
                                      self.recipe.compare.latency_repeats)
        outputs = {role: predict(model, x_test, self.recipe.train.eval_batch_size) for role, (model, _, _) in measured.items()}
        results = []
        if self.store is not None:
            outputs["teacher"] = self.store.fetch(self.data.test.ids).astype(np.float64)
            results.append(self._stored_result("teacher", outputs["teacher"], None))
            for index, member in enumerate(self.store.manifest.teacher.get("members", [])):
                if Path(member).is_dir():  # an ensemble: each member as it was cached
                    member_outputs = StoreReader(member).fetch(self.data.test.ids).astype(np.float64)
                    results.append(self._stored_result(f"member {index + 1}: {Path(member).name}", member_outputs,
                                                       outputs["teacher"]))
        return results + [self._result(role, model, weights_file, history, outputs[role], latencies[role],
                                       None if role == "teacher" else outputs["teacher"])
                          for role, (model, weights_file, history) in measured.items()]

    def _stored_result(self, role: str, outputs: np.ndarray, teacher_outputs: np.ndarray | None) -> ModelResult:
        """A teacher known by its stored outputs: test metrics (and agreement), no model to measure."""
        return ModelResult(role, task_metrics(self.data.task, outputs, self.data.test.y), None, None, None,
                           None if teacher_outputs is None else agreement(self.data.task, outputs, teacher_outputs),
                           [], None)

    def _result(self, role: str, model: nn.Module, weights_file: Path, history, outputs: np.ndarray,
                latency_ms: dict[str, float], teacher_outputs: np.ndarray | None) -> ModelResult:
        return ModelResult(
            role=role,
            metrics=task_metrics(self.data.task, outputs, self.data.test.y),
            parameters=count_parameters(model),
            size_bytes=weights_file.stat().st_size,
            latency_ms=latency_ms,
            agreement=None if teacher_outputs is None else agreement(self.data.task, outputs, teacher_outputs),
            val_history=[] if history is None else list(history.val),
            train_seconds=None if history is None else history.train_seconds,
        )
