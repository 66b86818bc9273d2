"""Writing a store: atomic shards, a progress manifest, and resumption after a kill.

A shard is serialised in memory, written to ``NAME.tmp``, fsynced and renamed; only then is it
recorded in ``manifest.partial.json`` (itself replaced atomically). A killed run therefore leaves
finished shards, possibly a temp file or one renamed-but-unrecorded shard; a new writer with the
same settings deletes the latter two and reports ``resume_from``. A writer deletes only files of
the names it writes itself (:data:`OWN_FILE`), and refuses a directory that holds anything else.
Shard contents depend only on the ids and logits (no timestamps, no metadata), so a resumed store
is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from kdistill import __version__
from kdistill.errors import KdistillError, writing
from kdistill.lock import LOCK_NAME
from kdistill.store.manifest import (
    MANIFEST,
    PARTIAL_MANIFEST,
    SETTINGS,
    Manifest,
    ShardInfo,
    changed_samples,
    ids_sha256,
    load_manifest,
    parse_manifest,
    shard_name,
    verify_shard,
)

OWN_FILE = re.compile(r"(manifest\.json|manifest\.partial\.json|shard-\d{5,}\.safetensors)(\.tmp)?")
"""The names of the files a store writer writes: the manifests, the shards and their temporary files."""
OWN_DIR = re.compile(r"part-\d{3,}")
"""The directories of a store written by several processes (:mod:`kdistill.store.parts`)."""


def _own_file(entry: Path) -> bool:
    return not entry.is_symlink() and entry.is_file() and bool(OWN_FILE.fullmatch(entry.name))


def _own_dir(entry: Path) -> bool:
    return not entry.is_symlink() and entry.is_dir() and bool(OWN_DIR.fullmatch(entry.name))


def foreign_entries(directory: Path) -> list[str]:
    """The names in ``directory`` that no store writer wrote (sorted; symlinks count as foreign;
    the lock a writer holds, :mod:`kdistill.lock`, is its own)."""
    def own(entry: Path) -> bool:
        return _own_file(entry) or _own_dir(entry) or entry.name == LOCK_NAME and entry.is_file()
    return sorted(entry.name for entry in directory.iterdir() if not own(entry))


def foreign_files(directory: Path) -> list[Path]:
    """Every entry of the store ``directory``, its part directories' included, that no store
    writer wrote (see :func:`foreign_entries`)."""
    found = [directory / name for name in foreign_entries(directory)]
    for part in sorted(filter(_own_dir, directory.iterdir())):
        found += [part / name for name in foreign_entries(part)]
    return found


def remove_store(directory: Path) -> None:
    """Delete the store files in ``directory`` and its part directories, then each directory left
    empty; anything a store writer did not write stays (callers refuse it first, by
    :func:`foreign_files`)."""
    for part in sorted(filter(_own_dir, directory.iterdir())):
        remove_store(part)
    for entry in filter(_own_file, directory.iterdir()):
        entry.unlink()
    with contextlib.suppress(OSError):  # not empty: it keeps what is not a store's
        directory.rmdir()


def check_store_dir(path: Path) -> None:
    """``path`` is absent, or a directory that holds nothing but a store's own files: a store never
    mixes with (or deletes) files it did not write."""
    if path.exists() and not path.is_dir():
        raise KdistillError(f"{path}: exists and is not a directory; a store is written to a new or empty directory "
                            "(or one holding a store)")
    foreign = foreign_entries(path) if path.is_dir() else []
    if foreign:
        raise KdistillError(
            f"{path}: holds {len(foreign)} entr{'ies' if len(foreign) > 1 else 'y'} kdistill did not write (e.g. "
            f"{foreign[0]!r}); a store is written to a new or empty directory (or one holding a store), so give "
            "another directory or move those out"
        )


def _fsync_dir(directory: Path) -> None:
    if os.name == "posix":  # a directory cannot be opened for fsync on Windows
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent/old or complete, never partial."""
    temp = path.with_name(path.name + ".tmp")
    with writing(path, "this file"):
        try:
            with temp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


def _json_value(teacher: dict[str, Any]) -> dict[str, Any]:
    """The teacher identity as it will read back from JSON (tuples become lists, ...)."""
    try:
        return json.loads(json.dumps(teacher))
    except (TypeError, ValueError) as error:
        raise KdistillError(f"StoreWriter: teacher must be a JSON-serialisable dict ({error})") from None


def new_manifest(ids: np.ndarray, *, num_classes: int, teacher: dict[str, Any], dataset_fingerprint: str,
                 dtype: str = "float32", k: int | None = None, views: int | None = None,
                 augment: dict[str, Any] | None = None, shard_size: int, keys: list[str] | None = None,
                 digests: list[str] | None = None) -> Manifest:
    """The manifest (no shards yet) of a store of ``ids`` (unique, in store order) with these
    settings; a keyed source's samples also have their ``keys`` and content ``digests``."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not len(ids) or not np.issubdtype(ids.dtype, np.integer):
        raise KdistillError(
            f"StoreWriter: ids must be a non-empty 1-D integer array, got dtype {ids.dtype} shape {ids.shape}"
        )
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        repeated = ", ".join(str(i) for i in unique[counts > 1][:5])
        raise KdistillError(f"StoreWriter: ids must be unique; repeated ids include {repeated}")
    return parse_manifest(
        {
            "kdistill_version": __version__,
            "teacher": _json_value(teacher),
            "dataset_fingerprint": dataset_fingerprint,
            "num_classes": num_classes,
            "dtype": dtype,
            "k": k,
            "views": views,
            "augment": augment,
            "shard_size": shard_size,
            "total": len(ids),
            "ids_sha256": ids_sha256(ids.astype(np.int64)),
            "keys": keys,
            "digests": digests,
        },
        "StoreWriter",
    )


class StoreWriter:
    """Write a teacher's logits for ``ids`` (all expected sample ids, in order) into a store at ``path``.

    Call ``write(batch_ids, logits)`` with consecutive batches in id order, starting at
    ``resume_from`` (0 for a new store; the samples already stored when resuming a killed run),
    then ``close()``. Settings must match those of a partial store being resumed; a complete store
    is replaced only with ``overwrite=True``.
    """

    def __init__(self, path: str | Path, *, ids: np.ndarray, overwrite: bool = False, **settings: Any) -> None:
        """``settings``: those of :func:`new_manifest` (teacher, dataset_fingerprint, num_classes,
        dtype, k, views, augment, shard_size, keys, digests)."""
        self.path = Path(path)
        requested = new_manifest(ids, **settings)
        self._ids = np.asarray(ids, dtype=np.int64)
        check_store_dir(self.path)
        with writing(self.path, "a soft-target store directory"):
            self.path.mkdir(parents=True, exist_ok=True)
        self.manifest = self._start(requested, overwrite)
        self.resume_from = self.manifest.stored
        self._cursor = self.resume_from
        self._pending: list[dict[str, np.ndarray]] = []

    def _start(self, requested: Manifest, overwrite: bool) -> Manifest:
        """The manifest to continue from; clears what a killed or replaced run left behind."""
        final, partial = self.path / MANIFEST, self.path / PARTIAL_MANIFEST
        manifest = requested
        if overwrite:
            final.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        elif final.exists():
            raise KdistillError(f"{self.path} already holds a complete store; pass overwrite=True to replace it")
        elif partial.exists():
            manifest = load_manifest(partial)
            for field in SETTINGS:
                stored, wanted = getattr(manifest, field), getattr(requested, field)
                if field in ("keys", "digests") and stored != wanted and None not in (stored, wanted):
                    change = changed_samples(manifest.keys, manifest.digests, requested.keys, requested.digests)
                    raise KdistillError(f"cannot resume the partial store {self.path}: its samples changed since it was "
                                        f"started ({change or 'their order differs'}); use overwrite=True to start over")
                if stored != wanted:
                    raise KdistillError(
                        f"cannot resume the partial store {self.path}: {field} differs (stored {stored!r},"
                        f" requested {wanted!r}); use the same settings, or overwrite=True to start over"
                    )
            for shard in manifest.shards:
                verify_shard(self.path, shard)
        recorded = {shard.file for shard in manifest.shards}
        for leftover in self.path.iterdir():  # check_store_dir: every entry is the writer's own
            if OWN_FILE.fullmatch(leftover.name) and leftover.name.endswith((".tmp", ".safetensors")) \
                    and leftover.name not in recorded:
                leftover.unlink()
        return manifest

    def write(self, batch_ids: np.ndarray, logits: np.ndarray) -> None:
        """Add the next batch: ``batch_ids`` (B,) must continue the expected ids; ``logits`` (B, C),
        raw, or with views (B, views + 1, C): view 0 the sample itself, then the augmented views."""
        batch_ids = np.asarray(batch_ids)
        logits = np.asarray(logits, dtype=np.float32)
        start, end = self._cursor, self._cursor + len(batch_ids)
        expected_shape = (len(batch_ids), *self.manifest.rows, self.manifest.num_classes)
        if logits.shape != expected_shape:
            names = "(batch, views + 1, num_classes)" if self.manifest.views else "(batch, num_classes)"
            raise KdistillError(f"StoreWriter.write: logits must be {names} = {expected_shape}, got shape {logits.shape}")
        if end > self.manifest.total:
            raise KdistillError(
                f"StoreWriter.write: got {end - self.manifest.total} samples more than the"
                f" {self.manifest.total} expected"
            )
        expected = self._ids[start:end]
        wrong = np.flatnonzero(batch_ids != expected)
        if wrong.size:
            at = int(wrong[0])
            raise KdistillError(
                f"StoreWriter.write: sample {start + at} must have id {expected[at]}, got {batch_ids[at]};"
                f" batches must follow the expected ids in order from resume_from={self.resume_from}"
            )
        self._pending.append(self._encode(expected, logits))
        self._cursor = end
        while self._buffered >= self.manifest.shard_size:
            self._flush(self.manifest.shard_size)

    def close(self) -> Manifest:
        """Write the last shard and the complete manifest; returns the manifest."""
        if self._cursor != self.manifest.total:
            raise KdistillError(
                f"StoreWriter.close: only {self._cursor} of {self.manifest.total} samples were written; the"
                f" {len(self.manifest.shards)} finished shards are kept, and a writer with the same settings resumes"
            )
        if self._pending:
            self._flush(self._buffered)
        self.manifest = self.manifest.model_copy(update={"complete": True})
        atomic_write(self.path / MANIFEST, self.manifest.to_json())
        (self.path / PARTIAL_MANIFEST).unlink(missing_ok=True)
        return self.manifest

    @property
    def _buffered(self) -> int:
        return sum(len(part["ids"]) for part in self._pending)

    def _encode(self, ids: np.ndarray, logits: np.ndarray) -> dict[str, np.ndarray]:
        """The shard tensors for one batch of float32 logits (see ``kdistill.store`` for the layout)."""
        dtype = self.manifest.dtype
        with np.errstate(over="ignore"):  # float16 overflow is reported below
            stored = logits.astype(dtype)
        bad = ~(np.isfinite(stored) | np.isneginf(logits))
        if bad.any():
            raise KdistillError(
                f"StoreWriter.write: logits of sample id {ids[np.flatnonzero(bad.reshape(len(ids), -1).any(axis=1))[0]]} are NaN, +inf or"
                f" outside the {dtype} range; only -inf is allowed"
            )
        k = self.manifest.k
        if k is None:
            return {"ids": ids, "logits": stored}
        order = np.argsort(-logits, axis=-1, kind="stable")
        indices, rest = order[..., :k], order[..., k:]
        if rest.shape[-1]:
            tail = np.logaddexp.reduce(np.take_along_axis(logits, rest, axis=-1).astype(np.float64), axis=-1)
        else:
            tail = np.full(logits.shape[:-1], -np.inf)
        return {
            "ids": ids,
            "indices": indices.astype(np.int32),
            "values": np.take_along_axis(stored, indices, axis=-1),
            "tail_logsumexp": tail.astype(np.float32),
        }

    def _flush(self, count: int) -> None:
        """Write the first ``count`` buffered samples as the next shard and record it."""
        merged = {name: np.concatenate([part[name] for part in self._pending]) for name in self._pending[0]}
        shard = {name: np.ascontiguousarray(array[:count]) for name, array in merged.items()}
        self._pending = [{name: array[count:] for name, array in merged.items()}] if len(merged["ids"]) > count else []
        data = save(shard)
        info = ShardInfo(
            file=shard_name(len(self.manifest.shards)),
            count=count,
            sha256=hashlib.sha256(data).hexdigest(),
            first_id=int(shard["ids"][0]),
            last_id=int(shard["ids"][-1]),
        )
        atomic_write(self.path / info.file, data)
        self.manifest = self.manifest.model_copy(update={"shards": [*self.manifest.shards, info]})
        atomic_write(self.path / PARTIAL_MANIFEST, self.manifest.to_json())
