"""The teacher's outputs for a chunk of planned steps, and running the teacher ahead of the student.

The loop (:mod:`kdistill.training.loop`) asks a :class:`ChunkTeacher` for the outputs of a whole
chunk of steps at once: a soft-target store or a teacher of another framework answers by sample
id and view (:func:`by_ids`); a frozen teacher of the student's framework runs on the inputs each
step will train on (:func:`by_inputs`), one forward per step, exactly the batch the in-step
teacher would have seen.

A teacher's forward for the next steps depends on nothing the student does, so with
``train.teacher_ahead`` a worker thread computes the outputs of the next chunks while the
student trains on the current one (:func:`with_outputs`): where the device has room to overlap
them, an epoch costs the slower of the two rather than their sum. Memory holds the outputs of
at most ``AHEAD_CHUNKS`` chunks besides the one training. The student is the same, bit for bit,
as with the teacher inside the step: the same forward runs on the same batch, only earlier and in
another thread (tested on the CPU). The frameworks' ops release the GIL, so the two threads
share the cores; on a GPU the teacher's work goes to a stream of its own (the PyTorch backend's
:meth:`frozen_forward`).

``auto`` (:func:`decide`) runs the teacher ahead on a GPU, when there is a teacher model to run
(not a store) and no feature loss needs its activations inside the student's step. On a CPU it
keeps the teacher in the step: there the teacher's forward already takes every core in turn, and
running it beside the student measured no faster on 2 cores, on any backend (BENCHMARKS.md, "The
teacher run ahead of the student"); ``on`` runs it ahead anyway.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.training.plan import Step

AHEAD_CHUNKS = 2
"""Chunks whose teacher outputs may be computed ahead of the one training (a small ring)."""


@dataclass(frozen=True)
class ChunkTeacher:
    """``outputs(steps)``: the teacher's rows for every step of a chunk, one step after another.
    ``needs_ids``: the steps must carry sample ids (and views), which a store is read by."""

    outputs: Callable[[Sequence[Step]], Any]
    needs_ids: bool


def by_ids(fetch: Callable[[np.ndarray, np.ndarray | None], Any], augmented: bool) -> ChunkTeacher:
    """A teacher read by sample id (a store's ``fetch``, a foreign teacher's outputs): one call
    for the chunk, with each sample's view of the epoch when ``augmented``."""

    def outputs(steps: Sequence[Step]) -> Any:
        return fetch(np.concatenate([step.ids for step in steps]),
                     np.concatenate([step.views for step in steps]) if augmented else None)

    return ChunkTeacher(outputs, needs_ids=True)


def by_inputs(forward: Callable[[np.ndarray], np.ndarray], data: TaskData) -> ChunkTeacher:
    """A frozen teacher run on each step's inputs (read ahead on the host when the split streams
    or is augmented, else gathered from memory): ``forward`` is the backend's
    :meth:`~kdistill.backends.contract.Backend.frozen_forward`."""

    def outputs(steps: Sequence[Step]) -> np.ndarray:
        return np.concatenate([forward(step.inputs(data) if step.x is None else step.x) for step in steps])

    return ChunkTeacher(outputs, needs_ids=False)


def with_outputs(chunks: Iterator[tuple[int, list[Step]]], teacher: ChunkTeacher | None,
                 ahead: bool) -> Iterator[tuple[int, list[Step], Any]]:
    """``(first step, steps, teacher outputs)`` for every chunk, in order. In line (``ahead``
    False) the outputs are computed when their chunk is due; ahead, a worker thread computes
    them up to ``AHEAD_CHUNKS`` chunks early. An error in the teacher surfaces at its chunk;
    closing this generator cancels the queued chunks, waits for the one running and closes
    ``chunks``."""
    with contextlib.closing(chunks):
        if teacher is None or not ahead:
            for first, steps in chunks:
                yield first, steps, None if teacher is None else teacher.outputs(steps)
            return
        pending: deque[tuple[int, list[Step], Future]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdistill-teacher") as worker:
            try:
                for first, steps in chunks:
                    pending.append((first, steps, worker.submit(teacher.outputs, steps)))
                    if len(pending) > AHEAD_CHUNKS:
                        yield _done(pending.popleft())
                while pending:
                    yield _done(pending.popleft())
            finally:
                for _, _, future in pending:
                    future.cancel()


def _done(entry: tuple[int, list[Step], Future]) -> tuple[int, list[Step], Any]:
    first, steps, future = entry
    return first, steps, future.result()


@dataclass(frozen=True)
class Decision:
    """Whether the teacher runs ahead of the student, and why (for the report)."""

    ahead: bool
    reason: str


def decide(mode: str, teacher_model: bool, feature_losses: Sequence[str], gpu: bool) -> Decision:
    """``train.teacher_ahead`` (auto | on | off) for a run: ``teacher_model`` — a teacher is run
    (not read from a store); ``feature_losses`` — the feature losses on, which need the teacher's
    activations inside the student's step; ``gpu`` — the student trains on an accelerator."""
    if mode == "off":
        return Decision(False, "off (train.teacher_ahead: off)")
    if not teacher_model:
        return Decision(False, "off (the teacher's outputs are read from a store)")
    if feature_losses:
        if mode == "on":
            raise KdistillError(f"train.teacher_ahead: on cannot run the teacher ahead with feature losses "
                                f"({', '.join(feature_losses)}): they need the teacher's activations inside the "
                                "student's step; set train.teacher_ahead: auto or off")
        return Decision(False, f"off (feature losses {', '.join(feature_losses)} need the teacher inside the step)")
    if mode == "on":
        return Decision(True, "on (train.teacher_ahead: on)")
    if gpu:
        return Decision(True, "on (auto: an accelerator)")
    return Decision(False, "off (auto: on a CPU the teacher in the step already has every core)")
