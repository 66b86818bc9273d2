"""Latency measured side by side: every model takes its turn within each repeat, in reverse order
on alternate repeats, so machine noise hits them alike; within its turn a forward runs once
untimed and then is timed, so it is timed with its own weights and buffers in the caches, not
with what the model before it left there."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

WARMUP_ROUNDS = 3
BATCH_SIZES = (1, 32, 256)  # the report's latency columns: one request, a serving batch, a bulk batch


def sizes_label() -> str:
    """``b=1 / b=32 / b=256``: the batch sizes a latency cell of the report lists."""
    return "b=" + " / b=".join(str(size) for size in BATCH_SIZES)


def sizes_cell(timings: dict[str, float] | None) -> str:
    """The milliseconds of one model at every batch size, ``a / b / c``; a dash where nothing was timed."""
    return "—" if not timings else " / ".join(f"{timings[f'batch_{size}']:.3f}" for size in BATCH_SIZES)


def measure_latencies(forwards: dict[str, Callable[[int], object]], batch_sizes: tuple[int, ...],
                      repeats: int) -> dict[str, dict[str, float]]:
    """Median milliseconds of ``forwards[role](batch_size)`` per role and batch size, after three
    warm-up rounds. Each forward must return only once its result is ready (a backend blocks on
    asynchronous devices inside it). Alternate repeats run the roles and sizes in reverse order,
    and each turn times the second of two calls in a row: a small model's batch-1 forward timed
    right after a teacher's batch-256 one would otherwise be timed reloading its weights and
    buffers from memory, which at batch 1 can take longer than its arithmetic."""
    timings: dict[str, dict[int, list[float]]] = {role: {size: [] for size in batch_sizes} for role in forwards}
    turns = [(role, size) for role in forwards for size in batch_sizes]
    for repeat in range(repeats + WARMUP_ROUNDS):
        for role, size in (turns if repeat % 2 == 0 else turns[::-1]):
            forwards[role](size)  # untimed: the turn's caches are this model's
            started = time.perf_counter()
            forwards[role](size)
            if repeat >= WARMUP_ROUNDS:
                timings[role][size].append((time.perf_counter() - started) * 1000)
    return {role: {f"batch_{size}": statistics.median(values) for size, values in by_size.items()}
            for role, by_size in timings.items()}
