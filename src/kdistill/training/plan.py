"""The seeded batch plan of an epoch, the same in every backend: which training rows (and which
transfer rows) each step takes, and where needed the samples' ids and augmentation views.

Numpy only, and a function of ``(seed, epoch)`` alone, so every backend sees the same batches
for the same seed and a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kdistill.data.augment import view_ids
from kdistill.data.splits import TaskData


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
    """The batch order of ``epoch``: depends only on ``(seed, epoch)``."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_train)
    transfer_order = None if not n_transfer else rng.permutation(n_transfer)
    return EpochPlan(order, transfer_order, batch_size)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)


@dataclass(frozen=True)
class Step:
    """One training step: rows of the training split, rows of the transfer split (or None), and
    where needed the ids of those samples (labeled first), their views this epoch, the augmented
    inputs, and this process's loss factors under data parallelism (``share``)."""

    rows: np.ndarray
    transfer_rows: np.ndarray | None
    ids: np.ndarray | None = None
    views: np.ndarray | None = None
    x: np.ndarray | None = None
    share: dict[str, float] | None = None

    @property
    def size(self) -> int:
        return len(self.rows) + (0 if self.transfer_rows is None else len(self.transfer_rows))

    def inputs(self, data: TaskData) -> np.ndarray:
        """The step's inputs as the data holds them (labeled rows, then transfer rows)."""
        if self.transfer_rows is None:
            return data.train.x[self.rows]
        return np.concatenate([data.train.x[self.rows], data.transfer.x[self.transfer_rows]])

    def with_ids(self, data: TaskData, seed: int, epoch: int, stored_views: int | None, augment: bool) -> "Step":
        ids = data.train.ids[self.rows] if self.transfer_rows is None else \
            np.concatenate([data.train.ids[self.rows], data.transfer.ids[self.transfer_rows]])
        return replace(self, ids=ids, views=view_ids(seed, epoch, ids, stored_views) if augment else None)
