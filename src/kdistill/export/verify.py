"""Does an exported file still compute what the trained model did? Its outputs on the test split,
run in its runtime, against the framework's: the largest logit difference, absolute and relative,
the share of equal decisions, and the task metrics of both; beyond tolerance a named error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kdistill.errors import KdistillError
from kdistill.report.metrics import PRIMARY, agreement, task_metrics


class ExportMismatch(KdistillError):
    """An exported file whose outputs differ from the framework's beyond the tolerance."""


@dataclass
class Verification:
    """``max_abs``: max |exported − framework| over every test output; ``relative``: that divided
    by max |framework| (the largest logit difference relative to the largest logit, so logits
    near zero do not blow it up); ``agreement``: share of test samples with the same decision
    (None for regression); ``metrics``/``framework_metrics``: the task metrics of each on the
    test split; ``change``: exported − framework on the primary metric."""

    samples: int
    max_abs: float
    relative: float
    tolerance: float | None
    agreement: float | None
    metrics: dict[str, float]
    framework_metrics: dict[str, float]
    change: float

    def to_dict(self) -> dict:
        return asdict(self)


def run_in_batches(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int) -> np.ndarray:
    """The runtime's outputs on every row of ``x``, ``batch_size`` rows at a time, as float64."""
    batches = [np.asarray(run(np.ascontiguousarray(x[start:start + batch_size])), np.float64)
               for start in range(0, len(x), batch_size)]
    return np.concatenate(batches).reshape(len(x), -1)


def compare(task: str, exported: np.ndarray, framework: np.ndarray, targets: np.ndarray,
            tolerance: float | None) -> Verification:
    """The exported outputs against the framework's on the test split (both raw, T = 1)."""
    framework = framework.reshape(exported.shape)
    max_abs = float(np.max(np.abs(exported - framework)))
    scale = float(np.max(np.abs(framework)))
    metrics, reference = task_metrics(task, exported, targets), task_metrics(task, framework, targets)
    primary = PRIMARY[task]
    return Verification(len(exported), max_abs, max_abs / scale if scale > 0 else max_abs, tolerance,
                        agreement(task, exported, framework), metrics, reference, metrics[primary] - reference[primary])


def check(verification: Verification, path: Path, what: str) -> None:
    """A named error when ``verification`` is beyond its tolerance (or not finite)."""
    tolerance, relative = verification.tolerance, verification.relative
    if np.isfinite(relative) and (tolerance is None or relative <= tolerance):
        return
    allowed = "finite outputs" if tolerance is None else f"the tolerance {tolerance:g}"
    raise ExportMismatch(
        f"{path}: {what} differs from the framework's outputs on the {verification.samples} test samples beyond "
        f"{allowed}: relative difference {relative:.3g} (max |Δlogit| {verification.max_abs:.3g}), same decision "
        f"on {_share(verification.agreement)}; the file was removed (--tolerance PRECISION=VALUE sets another)"
    )


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"
