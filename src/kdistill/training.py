"""What every backend's training loop shares: the history it returns, the seeded batch plan of an
epoch, and the stop on a non-finite loss.

The batch plan is numpy, so the Keras and JAX backends see the same batches for the same seed.
(The PyTorch loop fills the same :class:`EpochPlan` with orders drawn by ``torch.randperm``; its
recorded benchmarks depend on those orders.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdistill.errors import TrainingDiverged

CHECK_EVERY = 20  # steps between finiteness checks (one host sync each)


@dataclass
class History:
    """Per-epoch validation metric and mean training loss (``total`` and each part); seconds spent training."""

    metric: str
    val: list[float] = field(default_factory=list)
    loss: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0


@dataclass(frozen=True)
class EpochPlan:
    """The batches of one epoch: ``steps`` batches of ``batch_size`` training rows (the last may
    be short) and, with a transfer set, as many unlabeled rows per step, cycling through it."""

    order: np.ndarray
    transfer_order: np.ndarray | None
    batch_size: int

    @property
    def steps(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Row indices into the training split and into the transfer split (or None) for ``step``."""
        rows = self.order[step * self.batch_size:(step + 1) * self.batch_size]
        if self.transfer_order is None:
            return rows, None
        start = (step * self.batch_size) % len(self.transfer_order)
        return rows, self.transfer_order[start:start + self.batch_size]


def epoch_plan(seed: int, epoch: int, n_train: int, n_transfer: int | None, batch_size: int) -> EpochPlan:
    """The batch order of ``epoch``: depends only on ``(seed, epoch)``, so a resumed run continues
    exactly as an uninterrupted one."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_train)
    transfer_order = None if not n_transfer else rng.permutation(n_transfer)
    return EpochPlan(order, transfer_order, batch_size)


def check_finite(role: str, epoch: int, last_step: int, recent: np.ndarray, names: list[str],
                 checkpoint: Path | None) -> None:
    """``recent`` holds rows ``[total, *parts]`` for the steps up to ``last_step`` (0-based). Raise
    TrainingDiverged at the first row that is not finite, naming the epoch, step and parts."""
    finite = np.isfinite(recent).all(axis=1)
    if finite.all():
        return
    bad = int(np.flatnonzero(~finite)[0])
    shown = dict(zip(["total", *names], recent[bad].tolist()))
    raise TrainingDiverged(role, epoch + 1, last_step - len(recent) + 2 + bad, shown,
                           str(checkpoint) if checkpoint is not None and checkpoint.exists() else None)
