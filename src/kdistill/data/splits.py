"""Framework-neutral containers for a dataset's splits: numpy arrays keyed by stable sample ids."""

from __future__ import annotations

import hashlib
import json
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
    digests: str (N,) a content digest per sample of a keyed source (BLAKE2b of its file's bytes, or
         of its raw record): what a store records to name the files changed since caching.
    """

    x: np.ndarray | Samples
    y: np.ndarray | None
    ids: np.ndarray
    keys: np.ndarray | None = None
    digests: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.x)
        if len(self.ids) != n or (self.y is not None and len(self.y) != n) or \
                any(array is not None and len(array) != n for array in (self.keys, self.digests)):
            raise ValueError(
                f"split arrays disagree in length: x={n}, y={None if self.y is None else len(self.y)}, ids={len(self.ids)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> "Split":
        """The samples at ``index`` (ids travel with them)."""
        x = self.x.subset(index) if is_streamed(self.x) else self.x[index]
        return Split(x, *(None if array is None else array[index] for array in (self.y, self.ids, self.keys, self.digests)))


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
        """sha256 over every split's ids, shapes and bytes: identifies the exact data a run saw. A
        keyed source's samples count by their keys and content digests and ``meta["decode"]`` (how
        they are decoded), so a split held in memory and the same split read on demand agree."""
        digest = hashlib.sha256(f"{self.name}|{self.task}|{self.output_dim}".encode())
        if "decode" in self.meta:
            digest.update(json.dumps(self.meta["decode"], sort_keys=True).encode())
        for split in (self.train, self.val, self.test, self.transfer):
            if split is None:
                continue
            if split.digests is not None:
                digest.update("\n".join((*split.keys, *split.digests)).encode())
            elif is_streamed(split.x):
                split.x.fingerprint(digest)
            by_content = split.digests is not None or is_streamed(split.x)
            for array in (split.y, split.ids) if by_content else (split.x, split.y, split.ids):
                if array is not None:
                    digest.update(str(array.shape).encode() + str(array.dtype).encode())
                    digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()
