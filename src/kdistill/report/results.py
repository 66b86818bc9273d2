"""What the report knows about one model: framework-neutral numbers measured by a backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from kdistill.data.splits import TaskData
from kdistill.report.latency import BATCH_SIZES, measure_latencies
from kdistill.report.metrics import agreement, task_metrics
from kdistill.store import StoreReader
from kdistill.training import History


@dataclass
class ModelResult:
    """role: teacher | distilled | scratch. metrics: test-set task metrics at T = 1 (primary first).
    size_bytes: the saved weights file. latency_ms: median forward time at each batch size of ``BATCH_SIZES``.
    agreement: top-1 agreement with the teacher on the test set. val_history: primary
    validation metric after each epoch (empty for a loaded teacher). A teacher known only by its
    stored outputs (a soft-target store) has no parameters, size or latency: None."""

    role: str
    metrics: dict[str, float]
    parameters: int | None
    size_bytes: int | None
    latency_ms: dict[str, float] | None
    agreement: float | None
    val_history: list[float]
    train_seconds: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def measured_result(role: str, data: TaskData, outputs: np.ndarray, teacher_outputs: np.ndarray | None,
                    parameters: int | None = None, size_bytes: int | None = None,
                    latency_ms: dict[str, float] | None = None, history: History | None = None) -> ModelResult:
    """A model's report entry from its raw test outputs (T = 1): test metrics, and top-1 agreement
    with ``teacher_outputs`` unless it is the teacher. A model known only by stored outputs
    leaves parameters, size and latency None."""
    return ModelResult(
        role=role,
        metrics=task_metrics(data.task, outputs, data.test.y),
        parameters=parameters,
        size_bytes=size_bytes,
        latency_ms=latency_ms,
        agreement=None if teacher_outputs is None else agreement(data.task, outputs, teacher_outputs),
        val_history=[] if history is None else list(history.val),
        train_seconds=None if history is None else history.train_seconds,
    )


def stored_teacher_results(store: StoreReader, data: TaskData) -> tuple[np.ndarray, list[ModelResult]]:
    """A store teacher's test outputs and its report entries: the teacher and, for an ensemble
    store, each member over all classes as it was cached (with its agreement with the ensemble;
    specialists, over a subset of classes, are not scored on the full task)."""
    teacher_outputs = store.fetch(data.test.ids).astype(np.float64)
    results = [measured_result("teacher", data, teacher_outputs, None)]
    for index, member in enumerate(store.manifest.teacher.get("members", [])):
        if Path(member).is_dir() and StoreReader(member).manifest.num_classes == data.output_dim:
            member_outputs = StoreReader(member).fetch(data.test.ids).astype(np.float64)
            results.append(measured_result(f"member {index + 1}: {Path(member).name}", data, member_outputs,
                                           teacher_outputs))
    return teacher_outputs, results


@dataclass
class Trained:
    """A model a backend trained or loaded, ready to be measured: ``forward(size)`` runs it on
    ``size`` test rows and returns once the device is done; ``test_outputs`` its raw test outputs."""

    forward: Callable[[int], object]
    test_outputs: np.ndarray
    parameters: int
    weights_file: Path
    history: History | None
    extra_metrics: dict[str, float] = field(default_factory=dict)  # embeddings' (kdistill.report.embeddings), each head's


def results_for(data: TaskData, trained: dict[str, Trained], store: StoreReader | None,
                latency_repeats: int) -> list[ModelResult]:
    """The report entries of a run: latency of every model taken side by side, test metrics, size
    and agreement with the teacher — a store teacher (and its members) by their stored outputs."""
    latencies = measure_latencies({role: model.forward for role, model in trained.items()}, BATCH_SIZES,
                                  latency_repeats)
    outputs = {role: model.test_outputs for role, model in trained.items()}
    results = []
    if store is not None:
        outputs["teacher"], results = stored_teacher_results(store, data)
    for role, model in trained.items():
        result = measured_result(role, data, outputs[role], None if role == "teacher" else outputs["teacher"],
                                 model.parameters, model.weights_file.stat().st_size, latencies[role], model.history)
        result.metrics |= model.extra_metrics
        results.append(result)
    return results
