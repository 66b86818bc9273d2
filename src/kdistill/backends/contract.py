"""The backend contract: what a framework gives the one pipeline (:mod:`kdistill.pipeline`) and
the one training loop (:mod:`kdistill.training.loop`). Everything else — the recipe, data, epoch
plan, store reads, checks, checkpoints, events, measurements and the report — is written once,
above this line.

A backend builds, saves, loads and clones models, counts their parameters, predicts, times a
forward pass, makes a distiller (the objective of :mod:`kdistill.objective` in its framework), and
makes a :class:`StepRunner`: one fit's compiled training step over its own state, which it hands
over as named arrays for checkpoints.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdistill.backends import BackendInfo
from kdistill.data.samples import Samples, is_streamed
from kdistill.data.splits import TaskData
from kdistill.data.stream import read_batches
from kdistill.objective import Objective
from kdistill.recipe import FeaturePair, ModelConfig, TrainConfig
from kdistill.training import History
from kdistill.training.plan import Step


class StepRunner(ABC):
    """One fit's training step (the backend's compiled step, its optimizer and state).

    The loop hands it a chunk of planned steps at a time with the teacher's outputs for all of
    them (one store read, one copy to the device); :meth:`run` launches them and returns the
    per-step losses still pending on the device, which :meth:`losses` brings to the host as rows
    ``[total, *parts]`` (the loop reads a chunk once the next is running)."""

    names: list[str]  # ["total", *the loss parts, in order]

    def local(self, step: Step) -> Step:
        """This process's share of a planned step (several processes: its rows and loss factors)."""
        return step

    def session(self) -> contextlib.AbstractContextManager:
        """What stays entered for the whole fit (a device distribution, say)."""
        return contextlib.nullcontext()

    @abstractmethod
    def run(self, steps: Sequence[Step], teacher_outputs: Any | None) -> Any:
        """Train on ``steps`` in order; ``teacher_outputs`` holds the teacher's rows of every step,
        one after another (None: the distiller runs its teacher itself, or has none)."""

    @abstractmethod
    def losses(self, pending: Any) -> np.ndarray:
        """The rows ``[total, *parts]`` of a :meth:`run`, as float64 numpy."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Everything the next step depends on (weights, optimizer, random state) as named arrays."""

    @abstractmethod
    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state`; a ``ValueError`` if the arrays do not fit (names or shapes)."""

    def finish(self) -> None:
        """Leave the trained arrays in the distiller's models (after an epoch and at the end)."""


class Backend(ABC):
    """One framework. Models are the framework's own objects; inputs and outputs cross as numpy."""

    info: BackendInfo

    @abstractmethod
    def device(self, name: str) -> Any:
        """The device for ``train.device`` (auto | cpu | cuda); ``cuda`` without a GPU is a named error."""

    @abstractmethod
    def environment(self, device: Any, config: TrainConfig) -> dict[str, Any]:
        """Versions and device, for the report."""

    def job(self, device: Any) -> contextlib.AbstractContextManager:
        """What stays entered while a run trains (a process group of several processes)."""
        return contextlib.nullcontext()

    def scope(self, device: Any, config: TrainConfig) -> contextlib.AbstractContextManager:
        """Where models are built and trained (a default device, a distribution strategy's scope)."""
        return contextlib.nullcontext()

    @abstractmethod
    def build(self, config: ModelConfig, data: TaskData, field: str, seed: int, device: Any) -> tuple[Any, dict]:
        """The model a recipe section describes (factory or saved file), its initial weights drawn
        from ``seed`` alone, on ``device``; and the spec that rebuilds it."""

    @abstractmethod
    def output_shape(self, model: Any, probe: np.ndarray, device: Any) -> tuple[int, ...]:
        """The per-sample output shape of an inference forward on ``probe`` (may raise anything)."""

    @abstractmethod
    def save(self, model: Any, spec: dict, stem: Path) -> Path:
        """Write the model next to ``stem`` atomically, in the backend's format; returns the file."""

    @abstractmethod
    def clone(self, model: Any, spec: dict, data: TaskData, probe: np.ndarray, device: Any) -> Any:
        """An independent model with the same architecture and the same weights."""

    @abstractmethod
    def count_parameters(self, model: Any) -> int: ...

    @abstractmethod
    def predict_array(self, model: Any, x: np.ndarray, batch_size: int, device: Any) -> np.ndarray:
        """Raw outputs (logits at T = 1) on in-memory inputs, in inference mode, as float64 numpy."""

    def predict(self, model: Any, x: np.ndarray | Samples, batch_size: int, device: Any,
                workers: int | None = None) -> np.ndarray:
        """Raw outputs (logits at T = 1) in inference mode, as float64 numpy; inputs that stream
        from disk are read ``batch_size`` rows at a time by ``workers`` reader threads
        (:func:`kdistill.data.stream.read_batches`), never whole."""
        return _in_batches(lambda batch: self.predict_array(model, batch, batch_size, device), x, batch_size, workers)

    @abstractmethod
    def embed_array(self, model: Any, x: np.ndarray, path: str, batch_size: int, device: Any) -> np.ndarray:
        """The output of ``model``'s layer ``path`` (named as feature losses name layers) on
        in-memory inputs, in inference mode, flattened to float64 (N, D); a path the model does
        not have is a :class:`kdistill.errors.KdistillError` naming ``compare.embedding``."""

    def embed(self, model: Any, x: np.ndarray | Samples, path: str, batch_size: int, device: Any,
              workers: int | None = None) -> np.ndarray:
        """:meth:`embed_array` on inputs in memory or streamed (as :meth:`predict`)."""
        return _in_batches(lambda batch: self.embed_array(model, batch, path, batch_size, device), x, batch_size,
                           workers)

    def frozen_forward(self, model: Any, device: Any) -> Callable[[np.ndarray], np.ndarray]:
        """The frozen model as ``x -> outputs`` on one batch (inference mode, float32 numpy), made
        once for many calls: what a teacher run ahead of the student computes per step
        (:mod:`kdistill.training.ahead`). It runs in a worker thread, beside the training step."""
        return lambda x: self.predict_array(model, x, len(x), device).astype(np.float32)

    @abstractmethod
    def timed_forward(self, model: Any, x: np.ndarray, device: Any) -> Callable[[int], None]:
        """An inference forward on the first ``size`` rows of ``x`` (repeated if too few) that
        returns once the device is done: what the report's latency times."""

    @abstractmethod
    def set_trainable(self, model: Any, trainable: bool) -> None:
        """Unfrozen for its own training; frozen (inference mode, no gradients) as a teacher."""

    @abstractmethod
    def distiller(self, student: Any, objective: Objective, teacher: Any | None, features: Sequence[FeaturePair],
                  probe: np.ndarray | None, device: Any, seed: int) -> Any:
        """The objective in this framework: ``student`` (and adapters) trained against ``teacher``
        (a frozen model; None when the teacher's outputs come per chunk or there is none)."""

    @abstractmethod
    def runner(self, distiller: Any, data: TaskData, config: TrainConfig, total_steps: int, transfer: bool,
               device: Any) -> StepRunner:
        """The training step of one fit of ``distiller`` (``transfer``: steps carry transfer rows)."""

    @abstractmethod
    def student(self, distiller: Any) -> Any:
        """The model a distiller trains."""

    def export(self, model: Any, format: str, path: Path, example: np.ndarray, quantize: str | None = None) -> None:
        """Write ``model``'s inference forward to ``path`` in ``format`` (``onnx``, ``tflite``,
        ``savedmodel``: the formats of its registry capabilities, checked before), its batch
        dimension dynamic, traced on ``example`` (a few inputs). ``quantize`` (``tflite`` only: the
        converter's own ``float16`` or dynamic-range ``int8``); ONNX files are quantized from the
        float32 file by :mod:`kdistill.export.quantize`. A model the exporter cannot trace is a
        :class:`kdistill.errors.KdistillError` naming what it could not trace."""
        raise NotImplementedError(f"{self.info.name} exports no {format}")

    def fit(self, role: str, distiller: Any, data: TaskData, config: TrainConfig, **options: Any) -> "History":
        """The one training loop (:func:`kdistill.training.loop.fit`) on ``config.device``: for a
        distiller made by hand, outside ``kdistill run``."""
        from kdistill.training.loop import fit

        return fit(role, self, distiller, data, config, self.device(config.device), **options)


def _in_batches(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray | Samples, batch_size: int,
                workers: int | None) -> np.ndarray:
    """``run`` on in-memory inputs at once; on streamed ones ``batch_size`` rows at a time."""
    if not is_streamed(x):
        return run(x)
    return np.concatenate([run(batch) for batch in read_batches(x, batch_size, workers)])
