"""Timing helpers shared by the benchmarks: per-epoch seconds of any backend's ``fit``, variants
run side by side in interleaved rounds, per-round ratios, and the machine a figure came from.

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this module is imported as
``timing`` from the scripts' own directory.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any


def epoch_seconds(trainer: ModuleType, train: Callable[[], Any]) -> list[float]:
    """Seconds of each epoch of a kdistill ``fit`` run by ``train()``, for any backend's trainer
    module (``kdistill.{torch,keras,jax}.trainer``): ``fit`` calls the module's ``predict`` once
    after every epoch (validation), so an epoch is timed from the end of one validation pass to the
    start of the next. Validation is excluded; the first epoch also holds ``fit``'s set-up (and, on
    JAX and Keras, tracing and compilation): leave it out of steady-state figures."""
    stamps, predict = [time.perf_counter()], trainer.predict

    def timed_predict(*args, **kwargs):
        stamps.append(time.perf_counter())
        result = predict(*args, **kwargs)
        stamps.append(time.perf_counter())
        return result

    trainer.predict = timed_predict
    try:
        train()
    finally:
        trainer.predict = predict
    return [stamps[index + 1] - stamps[index] for index in range(0, len(stamps) - 1, 2)]


def wall_seconds(work: Callable[[], Any]) -> float:
    """Wall-clock seconds of ``work()`` (which must return only once its result is ready)."""
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def interleaved(variants: dict[str, Callable[[], float]], rounds: int,
                report: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, list[float]]:
    """Each variant's result (seconds) in each of ``rounds`` rounds. Every round runs every variant
    once, in the given order and in reverse on alternate rounds, so drift in the machine's speed
    hits the variants alike; ``report(round, results)`` after each round."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds):
        this_round = {}
        for name in (names if round_ % 2 == 0 else names[::-1]):
            this_round[name] = variants[name]()
            results[name].append(this_round[name])
        if report is not None:
            report(round_, this_round)
    return results


def per_round_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float | list[float]]:
    """Median and range of ``numerator[i] / denominator[i]`` over rounds (each ratio taken within one round)."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "per_round": ratios}


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """Total memory in GiB (``/proc/meminfo``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine(versions: dict[str, str]) -> dict[str, Any]:
    """Where a figure was measured: platform, CPU model, logical cores, memory, Python and ``versions``."""
    return {"platform": platform.platform(), "cpu": cpu_model(), "logical_cores": os.cpu_count(),
            "memory_gib": memory_gib(), "python": platform.python_version(), **versions}
