"""Framework-neutral containers for a dataset's splits: numpy arrays keyed by stable sample ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from kdistill.data.samples import Samples, is_streamed

TASKS = ("classification", "binary", "regression", "ranking")


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    x:   features, float32 (N, ...), in memory or read on demand (:class:`Samples`) — or, for
         ranking, int64 (N, 1 + L): column 0 the user id, columns 1.. the L candidate item ids.
    y:   targets or None for unlabeled transfer samples — int64 (N,) class index (classification),
         float32 (N,) 0/1 (binary), float32 (N, D) (regression), float32 (N, L) relevance (ranking).
    ids: int64 (N,) stable sample ids: the same sample has the same id in every run and framework.
    keys: str (N,) the samples' keys for a keyed source (relative file paths, a table's ``id``
         column), with ``ids == key_ids(keys)``; None for built-ins, whose integer ids are the keys.
    """

    x: np.ndarray | Samples
    y: np.ndarray | None
    ids: np.ndarray
    keys: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.x)
        if len(self.ids) != n or (self.y is not None and len(self.y) != n) or \
                (self.keys is not None and len(self.keys) != n):
            raise ValueError(
                f"split arrays disagree in length: x={n}, y={None if self.y is None else len(self.y)}, ids={len(self.ids)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> "Split":
        """The samples at ``index`` (ids travel with them)."""
        x = self.x.subset(index) if is_streamed(self.x) else self.x[index]
        return Split(x, None if self.y is None else self.y[index], self.ids[index],
                     None if self.keys is None else self.keys[index])


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
            if is_streamed(split.x):
                split.x.fingerprint(digest)
            for array in (split.y, split.ids) if is_streamed(split.x) else (split.x, split.y, split.ids):
                if array is not None:
                    digest.update(str(array.shape).encode() + str(array.dtype).encode())
                    digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
