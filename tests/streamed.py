"""A real source on disk for the streaming tests: a split's inputs written to an ``.npy`` file and
read back through ``np.load(mmap_mode="r")`` only for the rows asked for, counting every read."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from pathlib import Path

import numpy as np

from kdistill.data.samples import Samples
from kdistill.data.splits import TaskData


class NpyFile(Samples):
    """The rows of an ``.npy`` file, memory-mapped and copied out only when read; ``reads`` holds
    the row count of every read (from any reader thread)."""

    def __init__(self, path: Path):
        self.path = path
        self.array = np.load(path, mmap_mode="r")
        self.reads: list[int] = []
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def read(self, rows: np.ndarray) -> np.ndarray:
        with self._lock:
            self.reads.append(len(rows))
        return np.array(self.array[rows])

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        digest.update(self.path.read_bytes())


def on_disk(data: TaskData, directory: Path) -> TaskData:
    """``data`` with every split's inputs written to ``directory/SPLIT.npy`` and read from there."""
    directory.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name in ("train", "val", "test", "transfer"):
        split = getattr(data, name)
        if split is not None:
            np.save(directory / f"{name}.npy", split.x)
            splits[name] = dataclasses.replace(split, x=NpyFile(directory / f"{name}.npy"))
    return dataclasses.replace(data, **splits)
