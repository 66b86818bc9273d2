"""Timing helpers shared by the benchmarks: variants run side by side in interleaved rounds,
per-round ratios, and the machine a figure came from. (A kdistill epoch's seconds come from the
loop itself: ``History.epoch_seconds``, validation excluded.)

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this module is imported as
``timing`` from the scripts' own directory.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


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
