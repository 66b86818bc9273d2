"""Any Python collection of samples as keyed splits: :func:`from_samples`.

It takes a sequence (anything with ``len`` and integer indexing: a list, a torch ``Dataset``, a
Keras ``PyDataset`` of single samples, a grain ``MapDataset``) or an iterable (a generator, a
``tf.data.Dataset``). Each item is ``(key, x, y)``, or ``(x, y)`` with ``keys`` giving one key per
item; tensors of any framework are read through ``numpy.asarray`` (nothing here imports a
framework). A sequence is read once to learn the labels and digest every input, then its inputs
are read on demand by index; an iterable can be read only once, so its inputs are held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from kdistill.data.keyed import Listing, content_digest, keyed_task_data
from kdistill.data.samples import Indexed, Samples
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig

WHERE = "from_samples"


def _plain(value: Any) -> Any:
    """A framework tensor (or numpy scalar) as a numpy array or Python value."""
    value = value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else value
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


def _key(value: Any) -> str:
    value = _plain(value)
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _input(value: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(_plain(value), dtype=np.float32))


class IndexedSamples(Indexed):
    """The inputs of a sequence of samples, read by index on demand: item ``i``'s ``x``."""

    def __init__(self, dataset: Sequence, sample_shape: tuple[int, ...], keyed: bool, listing: Listing):
        self.dataset, self.sample_shape, self.keyed = dataset, sample_shape, keyed
        self.keys, self.digests = listing.keys, listing.digests

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.sample_shape), dtype=np.float32)
        for slot, row in enumerate(rows):
            out[slot] = _input(self.dataset[int(row)][1 if self.keyed else 0])
        return out

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        digest.update("\n".join((*self.keys, *self.digests)).encode())


class ArraySamples(Samples):
    """Inputs already in memory (an iterable read once), behind the :class:`Samples` interface
    until the splits are made."""

    def __init__(self, x: np.ndarray):
        self.x = x

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.x[rows]

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        digest.update(self.x.tobytes())


def _is_sequence(samples: Any) -> bool:
    return hasattr(samples, "__len__") and hasattr(samples, "__getitem__")


def from_samples(samples: Sequence | Iterable, *, task: str = "classification", keys: Sequence[str] | None = None,
                 name: str = "samples", val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                 cache_in_memory: bool = False) -> TaskData:
    """Keyed train/val/test splits of ``samples`` (items ``(key, x, y)``, or ``(x, y)`` with
    ``keys``), split by key like every keyed source: the same keys give the same splits whatever
    the order of the items. Labels are class names or numbers (classes sorted numerically when all
    are integers); ``task`` is ``classification`` or ``binary``."""
    sequence = _is_sequence(samples)
    config = DataConfig(val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed,
                        cache_in_memory=cache_in_memory or not sequence)
    keyed = keys is None
    given = None if keys is None else [str(key) for key in keys]
    found_keys, labels, digests, inputs = [], [], [], []
    shape = None
    for index, item in enumerate(samples[i] for i in range(len(samples))) if sequence else enumerate(samples):
        if not isinstance(item, (tuple, list)) or len(item) != (3 if keyed else 2):
            raise KdistillError(f"{WHERE}: item {index} must be {'(key, x, y)' if keyed else '(x, y)'}, got "
                                f"{type(item).__name__}{f' of {len(item)}' if isinstance(item, (tuple, list)) else ''}")
        x = _input(item[1 if keyed else 0])
        if shape is None:
            shape = x.shape
        elif x.shape != shape:
            raise KdistillError(f"{WHERE}: item {index} has inputs shaped {x.shape}, item 0 {shape}; every sample "
                                "needs the same shape")
        if given is not None and index >= len(given):
            raise KdistillError(f"{WHERE}: keys has {len(given)} entries, samples has more items")
        found_keys.append(_key(item[0]) if keyed else given[index])
        labels.append(_key(item[-1]))
        digests.append(content_digest(x.tobytes()))
        if not sequence:
            inputs.append(x)
    if given is not None and len(given) != len(found_keys):
        raise KdistillError(f"{WHERE}: keys has {len(given)} entries for {len(found_keys)} samples")
    if not found_keys:
        raise KdistillError(f"{WHERE}: no samples")
    listing = Listing(found_keys, labels, digests)
    x = IndexedSamples(samples, shape, keyed, listing) if sequence else ArraySamples(np.stack(inputs))
    return keyed_task_data(name, task, listing, x, config, WHERE, {"source": type(samples).__name__})
