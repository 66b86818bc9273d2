"""Reading a split's inputs on the host, ahead of the step: the one reader of every backend.

A step needs its inputs read on the host when its split streams from disk (a
:class:`~kdistill.data.samples.Samples`) or when ``data.augment`` draws its views; in-memory
inputs without augmentation stay on the device and need no reader. The reader decodes (and
augments) steps in ``train.workers`` threads, keeps ``train.prefetch`` chunks of steps read
ahead of the one training, and yields them in the order of the seeded plan, so the student is the
same for any number of workers, and memory holds a few chunks, never a split. Predicting over a
streamed split (validation and test metrics, a teacher's cached outputs) reads its batches the
same way.

Design: the machinery is Grain's ``MapDataset`` → ``to_iter_dataset(ReadOptions(num_threads,
prefetch_buffer_size))`` — framework-neutral (every backend streams through the same path),
ordered and deterministic, with a bounded prefetch buffer. Threads suffice: decoding (Pillow)
and numpy release the GIL, and threads share the sources' open files and need no pickling or
process start per epoch. ``train.workers: 0`` reads in the training thread, without Grain.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TypeVar

import numpy as np

from kdistill.data.augment import augment as augment_views
from kdistill.data.samples import Samples, is_streamed
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import AugmentConfig

Item = TypeVar("Item")
Read = TypeVar("Read")
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """One reader thread per CPU core this process may use, at most ``MAX_DEFAULT_WORKERS``; 0
    (read in the training thread) where Grain is not installed."""
    if importlib.util.find_spec("grain") is None:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def read_ahead(items: Sequence[Item], read: Callable[[Item], Read], workers: int | None,
               ahead: int) -> Iterator[Read]:
    """``read(item)`` for every item, in order, in ``workers`` threads (None: :func:`default_workers`)
    with at most ``ahead`` results read ahead of the consumer; ``workers=0``: in this thread."""
    workers = default_workers() if workers is None else workers
    if workers == 0:
        yield from map(read, items)
        return
    try:
        import grain
    except ImportError:
        raise KdistillError("train.workers: reading in parallel workers needs grain; "
                            "pip install 'kdistill[stream]' (or set train.workers: 0)") from None
    options = grain.ReadOptions(num_threads=workers, prefetch_buffer_size=max(ahead, 1))
    iterator = iter(grain.MapDataset.source(items).map(read).to_iter_dataset(options))
    try:
        yield from iterator
    finally:
        iterator.close()  # stops the threads when the consumer stops early (an error, a divergence)


def needs_reader(data: TaskData, augment: AugmentConfig | None) -> bool:
    """Do the training steps of ``data`` take their inputs from the host reader?"""
    return augment is not None or is_streamed(data.train.x) or \
        (data.transfer is not None and is_streamed(data.transfer.x))


def step_reader(data: TaskData, augment: AugmentConfig | None) -> Callable:
    """``step -> step`` with ``x`` set: the step's inputs (labeled rows, then transfer rows) read
    from ``data`` and, with ``augment``, replaced by each sample's view of the epoch."""
    def read(step):
        x = step.inputs(data)
        if augment is not None:
            x = augment_views(x, step.ids, step.views, augment)
        return replace(step, x=np.ascontiguousarray(x))
    return read


def read_batches(x: np.ndarray | Samples, batch_size: int, workers: int | None = None, ahead: int = 2,
                 start: int = 0) -> Iterator[np.ndarray]:
    """``x[start:]`` in batches of ``batch_size`` rows, read ahead by the reader when ``x`` streams."""
    starts = range(start, len(x), batch_size)
    if not is_streamed(x):
        return (x[first:first + batch_size] for first in starts)
    return read_ahead(starts, lambda first: np.ascontiguousarray(x[first:first + batch_size]), workers, ahead)


def rows_between(x: np.ndarray | Samples, start: int, stop: int) -> np.ndarray | Samples:
    """``x[start:stop]`` without reading it: a view of an array, a subset of streamed samples."""
    return x.subset(np.arange(start, stop)) if is_streamed(x) else x[start:stop]
