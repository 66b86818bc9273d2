"""Keyed sources (folders, tables, Hugging Face datasets, Python iterables): what they share.

A keyed source lists its samples as string keys, class labels and content digests, and gives
their inputs as a :class:`~kdistill.data.samples.Samples`; :func:`keyed_task_data` turns that into
a :class:`TaskData`. The train/val/test split is drawn over the samples sorted by key, so it does
not depend on the order a directory or table lists them in. A key given twice, or two keys whose
int64 ids collide, is an error naming them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kdistill.data.partition import split_indices
from kdistill.data.samples import Samples, key_ids
from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig

KEYED_TASKS = ("classification", "binary")
SHOWN = 5
"""How many names an error or a count of skipped samples lists."""


def content_digest(data: bytes) -> str:
    """The content digest of a sample: BLAKE2b-128 of its bytes, hex."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def listed(names: Sequence[str], most: int = SHOWN) -> str:
    """Up to ``most`` names, quoted and comma-separated, then how many more."""
    shown = ", ".join(repr(str(name)) for name in names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def unique_key_ids(keys: Sequence[str], where: str) -> np.ndarray:
    """The int64 ids of ``keys``, which must be distinct, as must their ids."""
    keys = np.asarray(keys, dtype=str)
    unique, counts = np.unique(keys, return_counts=True)
    if (counts > 1).any():
        repeated = unique[counts > 1]
        raise KdistillError(f"{where}: sample key {str(repeated[0])!r} appears {counts[counts > 1][0]} times "
                            f"({len(repeated)} repeated key{'s' if len(repeated) > 1 else ''}: {listed(repeated)}); "
                            "every sample needs its own key")
    ids = key_ids(keys.tolist())
    order = np.argsort(ids, kind="stable")
    same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if same.size:
        a, b = keys[order[same[0]]], keys[order[same[0] + 1]]
        raise KdistillError(f"{where}: sample keys {str(a)!r} and {str(b)!r} hash to the same id {ids[order[same[0]]]}; "
                            "rename one of them")
    return ids


def class_names(labels: Sequence[str]) -> list[str]:
    """The classes of string labels, sorted: numerically when every label is an integer, else as text."""
    names = sorted(set(labels))
    if all(name.lstrip("-").isdigit() for name in names):
        names.sort(key=int)
    return names


def targets(labels: Sequence[str], classes: list[str], task: str, where: str) -> tuple[np.ndarray, int]:
    """(y, output dimension) of class-name labels for ``task``: int64 class indices, or float32 0/1
    for a binary task over exactly two classes (the first sorted class is 0)."""
    if len(classes) < 2:
        raise KdistillError(f"{where}: holds one class ({classes[0]!r}) only; {task} needs at least 2 classes")
    if task == "binary" and len(classes) != 2:
        raise KdistillError(f"{where}: a binary task needs exactly 2 classes, found {len(classes)} "
                            f"({listed(classes)}); use task: classification")
    index = {name: position for position, name in enumerate(classes)}
    y = np.fromiter((index[label] for label in labels), dtype=np.int64, count=len(labels))
    return (y.astype(np.float32), 1) if task == "binary" else (y, len(classes))


@dataclass
class BadSamples:
    """The ``data.on_bad_sample`` policy: raise at the first bad sample, or count and skip it."""

    policy: str
    skipped: list[str] = field(default_factory=list)

    def found(self, message: str, key: str) -> None:
        """A bad sample ``key``: raise ``message`` (policy ``error``) or remember it (``skip``)."""
        if self.policy == "error":
            raise KdistillError(f"{message} (data.on_bad_sample: error; set it to skip to leave such files out)")
        self.skipped.append(key)

    def meta(self) -> dict:
        """What the report shows: the policy, the count skipped, the first few skipped keys."""
        return {"policy": self.policy, "skipped": len(self.skipped), "examples": self.skipped[:SHOWN]}


@dataclass(frozen=True)
class Listing:
    """What a keyed source found: one key, label (class name or None) and content digest per sample."""

    keys: list[str]
    labels: list[str] | None
    digests: list[str]


def keyed_task_data(name: str, task: str, listing: Listing, x: Samples, config: DataConfig, where: str,
                    meta: dict) -> TaskData:
    """The splits of a labeled keyed source: samples sorted by key, ids from keys, a stratified
    seeded split, and the inputs decoded into memory when ``data.cache_in_memory`` asks for it."""
    if task not in KEYED_TASKS:
        raise KdistillError(f"task: {task!r}; data.dataset {name!r} gives labeled classes, for task "
                            f"{' or '.join(KEYED_TASKS)}")
    if not listing.keys:
        raise KdistillError(f"{where}: holds no samples")
    classes = class_names(listing.labels)
    y, output_dim = targets(listing.labels, classes, task, where)
    full = sorted_split(listing, x, y, where)
    train, val, test = (full.take(index) for index in split_indices(
        len(full), config.split_seed, config.val_fraction, config.test_fraction, full.y))
    unseen = sorted(set(classes) - {classes[int(label)] for label in train.y})
    if unseen:
        raise KdistillError(f"{where}: class{'es' if len(unseen) > 1 else ''} {listed(unseen)} "
                            "has no training sample (its few samples all went to val and test); add samples, or lower "
                            "data.val_fraction / data.test_fraction")
    splits = [in_memory(split) if config.cache_in_memory else split for split in (train, val, test)]
    return TaskData(name, task, *splits, output_dim=output_dim, meta={"classes": classes, **meta})


def sorted_split(listing: Listing, x: Samples, y: np.ndarray | None, where: str) -> Split:
    """All samples of ``listing`` as one split, in key order, with ids from keys."""
    keys = np.asarray(listing.keys, dtype=str)
    ids = unique_key_ids(keys, where)
    order = np.argsort(keys, kind="stable")
    full = Split(x, y, ids, keys, np.asarray(listing.digests, dtype=str))
    return full.take(order)


def in_memory(split: Split, chunk: int = 1024) -> Split:
    """``split`` with its inputs decoded into one array (``data.cache_in_memory``)."""
    if not isinstance(split.x, Samples):
        return split
    x = np.empty(split.x.shape, dtype=split.x.dtype)
    for start in range(0, len(x), chunk):
        x[start:start + chunk] = split.x[start:start + chunk]
    return Split(x, split.y, split.ids, split.keys, split.digests)
