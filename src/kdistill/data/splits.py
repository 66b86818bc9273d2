"""Framework-neutral containers for a dataset's splits: numpy arrays keyed by stable sample ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

TASKS = ("classification", "binary", "regression", "ranking")


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    x:   features, float32 (N, ...) — or, for ranking, int64 (N, 1 + L): column 0 the user id,
         columns 1.. the L candidate item ids of that user's list.
    y:   targets or None for unlabeled transfer samples — int64 (N,) class index (classification),
         float32 (N,) 0/1 (binary), float32 (N, D) (regression), float32 (N, L) relevance (ranking).
    ids: int64 (N,) stable sample ids: the same sample has the same id in every run and framework.
    """

    x: np.ndarray
    y: np.ndarray | None
    ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.x)
        if len(self.ids) != n or (self.y is not None and len(self.y) != n):
            raise ValueError(
                f"split arrays disagree in length: x={n}, y={None if self.y is None else len(self.y)}, ids={len(self.ids)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> "Split":
        """The samples at ``index`` (ids travel with them)."""
        return Split(self.x[index], None if self.y is None else self.y[index], self.ids[index])


@dataclass(frozen=True)
class TaskData:
    """Everything a trainer needs from the data side.

    output_dim: classes (classification), 1 (binary), D (regression), L list length (ranking).
    meta:       loader-specific facts (e.g. ``n_users``/``n_items`` for ranking, class names).
    """

    name: str
    task: str
    train: Split
    val: Split
    test: Split
    output_dim: int
    transfer: Split | None = None
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def fingerprint(self) -> str:
        """sha256 over every split's ids, shapes and bytes: identifies the exact data a run saw."""
        digest = hashlib.sha256(f"{self.name}|{self.task}|{self.output_dim}".encode())
        for split in (self.train, self.val, self.test, self.transfer):
            if split is None:
                continue
            for array in (split.x, split.y, split.ids):
                if array is not None:
                    digest.update(str(array.shape).encode() + str(array.dtype).encode())
                    digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
