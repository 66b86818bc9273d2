"""Samples read on demand: what a split's ``x`` is when its source streams from disk.

A split's inputs are either a numpy array (built-ins, user arrays, ``cache_in_memory``) or a
:class:`Samples`: an indexable that decodes only the rows asked for, so nothing holds a whole split
in memory. Code that reads inputs indexes them (``x[rows]``, ``x[start:stop]``) and gets a numpy
batch either way; :func:`is_streamed` tells the two apart where it matters (placing a whole split
on a device, fingerprinting).

Every sample of a keyed source has a string **key** (the relative file path of a folder, a table's
``id`` column); :func:`key_ids` turns keys into the int64 ids the plan, augmentation and store use,
a function of the key alone, so a sample keeps its id whatever the listing order or machine.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np


class Samples(ABC):
    """A split's inputs, decoded on demand: ``len(samples)`` rows shaped ``shape[1:]`` of
    ``dtype``; ``samples[index]`` (an int array, a slice or an int) is a numpy batch."""

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """(N, *shape of one decoded sample)."""

    @property
    @abstractmethod
    def dtype(self) -> np.dtype:
        """The dtype of a decoded batch."""

    @abstractmethod
    def read(self, rows: np.ndarray) -> np.ndarray:
        """The decoded samples at ``rows`` (int64, in that order), shaped (len(rows), *shape[1:])."""

    @abstractmethod
    def fingerprint(self, digest: "hashlib._Hash") -> None:
        """Update ``digest`` with what identifies these samples (keys and file contents), without
        decoding them."""

    def raw(self, rows: np.ndarray) -> list | np.ndarray:
        """The raw samples at ``rows`` before the source's featurisation (a text source's strings);
        for other sources the decoded samples, as :meth:`read` gives them."""
        return self.read(rows)

    def subset(self, rows: np.ndarray) -> "Samples":
        """The samples at ``rows``, still read on demand (what ``Split.take`` keeps)."""
        return Subset(self, np.asarray(rows, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: np.ndarray | slice | int) -> np.ndarray:
        if isinstance(index, slice):
            return self.read(np.arange(len(self))[index])
        if np.ndim(index) == 0:
            return self.read(np.asarray([index], dtype=np.int64))[0]
        return self.read(np.asarray(index, dtype=np.int64))


class Indexed(Samples):
    """Samples shaped ``sample_shape`` of ``sample_dtype`` (float32 unless a subclass says
    otherwise), one per item of ``dataset`` (a source read by index: a Hugging Face dataset, a
    Python sequence); subclasses set ``dataset`` and ``sample_shape`` and give ``read``."""

    dataset: Any
    sample_shape: tuple[int, ...]
    sample_dtype: np.dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.dataset), *self.sample_shape)

    @property
    def dtype(self) -> np.dtype:
        return self.sample_dtype


class Subset(Samples):
    """The rows ``rows`` of ``parent``, read on demand."""

    def __init__(self, parent: Samples, rows: np.ndarray):
        self.parent, self.rows = parent, rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.parent.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.parent.dtype

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.parent.read(self.rows[rows])

    def raw(self, rows: np.ndarray) -> list | np.ndarray:
        return self.parent.raw(self.rows[rows])

    def subset(self, rows: np.ndarray) -> Samples:
        return Subset(self.parent, self.rows[np.asarray(rows, dtype=np.int64)])

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        self.parent.fingerprint(digest)
        digest.update(self.rows.tobytes())


class Joined(Samples):
    """Several splits' inputs one after another (what a store is cached from), read on demand."""

    def __init__(self, parts: Sequence[np.ndarray | Samples]):
        self.parts = list(parts)
        self.starts = np.cumsum([0, *(len(part) for part in self.parts)])

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.parts[0].shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.parts[0].dtype)

    def read(self, rows: np.ndarray) -> np.ndarray:
        part_of = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        for part in np.unique(part_of):
            here = part_of == part
            out[here] = self.parts[part][rows[here] - self.starts[part]]
        return out

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        for part in self.parts:
            if is_streamed(part):
                part.fingerprint(digest)
            else:
                digest.update(np.ascontiguousarray(part).tobytes())


def concatenate(parts: Sequence[np.ndarray | Samples]) -> np.ndarray | Samples:
    """The inputs ``parts`` one after another: an array if every part is one, else read on demand."""
    return Joined(parts) if any(is_streamed(part) for part in parts) else np.concatenate(parts)


def is_streamed(x: np.ndarray | Samples) -> bool:
    """True when ``x`` is read on demand (a :class:`Samples`), False for an in-memory array."""
    return isinstance(x, Samples)


def key_ids(keys: Sequence[str]) -> np.ndarray:
    """int64 ids of string keys: the first 63 bits of each key's BLAKE2b digest (non-negative)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")
                        >> 1 for key in keys), dtype=np.int64, count=len(keys))
