"""The deploy measurements: every exported file's latency in its runtime at batch 1, 32 and 256, with
one intra-op thread and with all cores, taken side by side with the framework's own forward of
the same model (:func:`kdistill.report.latency.measure_latencies`: every forward takes its turn
within each repeat, so machine noise hits them alike)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from kdistill.report.latency import BATCH_SIZES, measure_latencies

Run = Callable[[np.ndarray], np.ndarray]


def all_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def timed(run: Run, x: np.ndarray) -> Callable[[int], None]:
    """``size -> None``: ``run`` on the first ``size`` test rows (repeated if too few), batches made once."""
    batches = {size: np.ascontiguousarray(x[np.arange(size) % len(x)]) for size in BATCH_SIZES}
    return lambda size: run(batches[size])


def measure(runtimes: dict[str, dict[str, Run]], frameworks: dict[str, Callable[[int], None]], x: np.ndarray,
            repeats: int) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, float]]]:
    """Median milliseconds per batch size: ``runtimes[file][threads]`` (a runner per thread
    setting) and ``frameworks[role]`` (the backend's ``timed_forward``), all in one side-by-side
    measurement. Returns (per file, per thread setting) and (per role)."""
    forwards = {f"framework/{role}": forward for role, forward in frameworks.items()}
    forwards |= {f"{name}/{threads}": timed(run, x) for name, by_threads in runtimes.items()
                 for threads, run in by_threads.items()}
    medians = measure_latencies(forwards, BATCH_SIZES, repeats)
    per_file = {name: {threads: medians[f"{name}/{threads}"] for threads in by_threads}
                for name, by_threads in runtimes.items()}
    return per_file, {role: medians[f"framework/{role}"] for role in frameworks}
