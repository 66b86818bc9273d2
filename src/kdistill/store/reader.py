"""Reading a store: verify on open, then gather rows by sample id from memory-mapped shards.

Shards are standard safetensors files (any framework's safetensors loader reads them). This
reader parses the safetensors header itself and memory-maps each tensor with ``np.memmap``,
because a batch gathers rows scattered over a shard: ``safe_open(..., framework="numpy")`` can
only copy a whole tensor or a contiguous slice, one Python call per row, whereas a memmap gathers
the rows of a batch with one fancy index and reads only the pages they touch. A store whose
tensors total at most ``IN_MEMORY_BYTES`` is read into memory on open instead (one array per
tensor, over all shards), so that a fetch is one gather rather than one per shard it touches.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from kdistill.errors import KdistillError, reading
from kdistill.store.manifest import (
    MANIFEST,
    PARTIAL_MANIFEST,
    Manifest,
    changed_samples,
    ids_sha256,
    load_manifest,
    verify_shard,
)

_SAFETENSORS_DTYPES = {"I64": "<i8", "I32": "<i4", "F32": "<f4", "F16": "<f2"}
IN_MEMORY_BYTES = 64 * 2**20
"""A store whose tensors (all shards together) take at most this many bytes is held in memory."""
_DENSE_INDEX_SLACK = 4
"""Sample ids are looked up in a table indexed by id when their span is at most this many times
their count (the table is then at most that many int64 entries per sample); by binary search
otherwise."""


def reconstruct_logits(
    indices: np.ndarray, values: np.ndarray, tail_logsumexp: np.ndarray, num_classes: int
) -> np.ndarray:
    """Full (n, C) float32 logits from top-k storage: kept classes get their stored values, each of
    the C − k missing classes gets ``tail_logsumexp − log(C − k)`` (the uniform tail treatment,
    exact at T = 1, approximate for T ≠ 1; see ``kdistill.store``)."""
    missing = num_classes - indices.shape[1]
    fill = tail_logsumexp.astype(np.float64) - np.log(max(missing, 1))  # missing = 0: every entry is overwritten
    logits = np.repeat(fill.astype(np.float32)[:, None], num_classes, axis=1)
    np.put_along_axis(logits, indices.astype(np.intp), values.astype(np.float32), axis=1)
    return logits


def _open_manifest(path: Path) -> Manifest:
    """The manifest of a complete store; a KdistillError for a missing or incomplete one."""
    source = path / MANIFEST if (path / MANIFEST).exists() else path / PARTIAL_MANIFEST
    if not source.exists():
        raise KdistillError(f"{path} is not a soft-target store: {MANIFEST} is missing")
    manifest = load_manifest(source)
    if source.name == PARTIAL_MANIFEST or not manifest.complete:
        raise KdistillError(
            f"{path} is an incomplete store ({manifest.stored} of {manifest.total} samples in"
            f" {len(manifest.shards)} shards): its cache run was interrupted; run it again with the same"
            " settings to resume"
        )
    return manifest


def _memmap_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a read-only memory-mapped array."""
    with reading(path, "a safetensors shard", hint="the store is damaged", also=(KeyError, TypeError, AttributeError)):
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        (size,) = struct.unpack("<Q", raw[:8].tobytes())
        header = json.loads(raw[8 : 8 + size].tobytes())
        header.pop("__metadata__", None)
        tensors = {}
        for name, entry in header.items():
            begin, end = (8 + size + offset for offset in entry["data_offsets"])
            if end > len(raw):
                raise ValueError(f"tensor {name!r} ends at byte {end}, past the end of the file ({len(raw)} bytes)")
            dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
            tensors[name] = raw[begin:end].view(dtype).reshape(entry["shape"])
        return tensors


def _missing(missing: np.ndarray) -> str:
    """The end of a message about ids absent from the store, with up to five of them."""
    return f"are not in the store (e.g. {', '.join(str(i) for i in missing[:5])})"


class StoreReader:
    """A complete store, verified on open and fetched from by sample id.

    On open: the manifest must be complete; with ``verify`` (the default) every shard's sha256 is
    checked; every shard must hold the manifest's tensors, dtypes, shapes and first/last ids; and
    the ids of all shards, in order, must hash to the manifest's ``ids_sha256``.
    """

    def __init__(self, path: str | Path, *, verify: bool = True) -> None:
        self.path = Path(path)
        self.manifest = _open_manifest(self.path)
        self._shards = [self._open_shard(index, verify) for index in range(len(self.manifest.shards))]
        self.ids: np.ndarray = np.concatenate([shard["ids"] for shard in self._shards])
        if ids_sha256(self.ids) != self.manifest.ids_sha256:
            raise KdistillError(
                f"{self.path}: the sample ids in the shards do not match the manifest (ids sha256"
                f" {ids_sha256(self.ids)}, manifest {self.manifest.ids_sha256}); the store is damaged or mixed"
            )
        self._sorted_ids = np.sort(self.ids)
        self._low = int(self._sorted_ids[0])
        span = int(self._sorted_ids[-1]) - self._low + 1
        if span <= _DENSE_INDEX_SLACK * len(self.ids):  # position of id i at [i - low], -1 where absent
            self._position_of = np.full(span, -1, dtype=np.int64)
            self._position_of[self.ids - self._low] = np.arange(len(self.ids))
        else:
            self._position_of = None
            self._order = np.argsort(self.ids, kind="stable")
        names = [name for name in self._shards[0] if name != "ids"]
        size = sum(shard[name].nbytes for shard in self._shards for name in names)
        self._whole = ({name: np.concatenate([shard[name] for shard in self._shards]) for name in names}
                       if size <= IN_MEMORY_BYTES else None)

    def _open_shard(self, index: int, verify: bool) -> dict[str, np.ndarray]:
        info = self.manifest.shards[index]
        path = self.path / info.file
        if verify:
            verify_shard(self.path, info)
        tensors = _memmap_tensors(path)
        found = {name: (array.dtype, array.shape) for name, array in tensors.items()}
        expected = self.manifest.tensor_layout(info.count)
        if found != expected:
            raise KdistillError(f"{path}: holds tensors {found}, the manifest implies {expected}")
        first, last = int(tensors["ids"][0]), int(tensors["ids"][-1])
        if (first, last) != (info.first_id, info.last_id):
            raise KdistillError(
                f"{path}: ids run from {first} to {last}, the manifest says {info.first_id} to {info.last_id}"
            )
        return tensors

    def __len__(self) -> int:
        return self.manifest.total

    def check(
        self,
        *,
        ids: np.ndarray | None = None,
        num_classes: int | None = None,
        dataset_fingerprint: str | None = None,
        needs_dense: bool = False,
        augment: dict | None = None,
        samples: tuple[list[str], list[str]] | None = None,
    ) -> None:
        """Raise one KdistillError listing every way this store does not fit a run: keyed
        ``samples`` (keys, content digests) added, removed or changed since caching, another
        dataset fingerprint, training ``ids`` missing from the store, another class count than the
        student's, top-k storage for a loss that ``needs_dense`` logits, or, for a run that
        ``augment``s its inputs, no cached views or views of another augmentation."""
        manifest, problems = self.manifest, []
        change = None if samples is None or manifest.keys is None else changed_samples(manifest.keys, manifest.digests, *samples)
        if change:  # the fingerprint and ids differ too, by these files
            problems.append(f"sample files changed since caching: {change}; cache the teacher again for these data")
        elif dataset_fingerprint is not None and dataset_fingerprint != manifest.dataset_fingerprint:
            problems.append(
                f"dataset fingerprint differs (store {manifest.dataset_fingerprint},"
                f" training data {dataset_fingerprint})"
            )
        if ids is not None and not change:
            ids = np.asarray(ids, dtype=np.int64)
            missing = np.setdiff1d(ids, self._sorted_ids)
            if missing.size:
                problems.append(f"{missing.size} of {len(ids)} training sample ids {_missing(missing)}")
        if num_classes is not None and num_classes != manifest.num_classes:
            problems.append(f"class count differs (store {manifest.num_classes}, student {num_classes})")
        if needs_dense and manifest.k is not None:
            problems.append(
                f"the store keeps only the top-{manifest.k} logits per sample but the loss needs dense logits;"
                " cache without k, or use a loss that accepts top-k targets"
            )
        if augment is not None and manifest.augment != augment:
            problems.append(
                "the run augments its inputs but the store holds no augmentation views (its outputs would belong to "
                "inputs the student never sees); cache with --views K" if manifest.augment is None else
                f"its views were cached with augmentation {manifest.augment}, the run uses {augment}"
            )
        if problems:
            raise KdistillError(f"soft-target store {self.path} does not fit this run: " + "; ".join(problems))

    def fetch(self, batch_ids: np.ndarray, views: np.ndarray | None = None) -> np.ndarray:
        """(B, C) float32 logits for ``batch_ids``, in that order, at ``views`` (per sample, from a
        store cached with views; default view 0, the samples themselves); top-k stores are
        reconstructed with the uniform tail treatment (:func:`reconstruct_logits`)."""
        if self.manifest.k is None:
            return self._gather(self._positions(batch_ids), "logits", views).astype(np.float32, copy=False)
        return reconstruct_logits(*self.fetch_sparse(batch_ids, views), self.manifest.num_classes)

    def fetch_sparse(self, batch_ids: np.ndarray,
                     views: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-k storage for ``batch_ids`` (at ``views``, as in :meth:`fetch`): indices int32 (B, k),
        values float32 (B, k), tail_logsumexp float32 (B,)."""
        if self.manifest.k is None:
            raise KdistillError(f"{self.path} stores dense logits (no k); use fetch()")
        positions = self._positions(batch_ids)
        return (
            self._gather(positions, "indices", views),
            self._gather(positions, "values", views).astype(np.float32, copy=False),
            self._gather(positions, "tail_logsumexp", views),
        )

    def _positions(self, batch_ids: np.ndarray) -> np.ndarray:
        """The store positions (order of the manifest ids) of ``batch_ids``."""
        batch_ids = np.asarray(batch_ids, dtype=np.int64)
        if self._position_of is not None:  # ids out of the span are clipped to its ends, then fail the check
            positions = self._position_of.take(batch_ids - self._low, mode="clip")
        else:
            slots = np.minimum(np.searchsorted(self._sorted_ids, batch_ids), len(self._sorted_ids) - 1)
            positions = self._order[slots]
        absent = self.ids.take(positions) != batch_ids  # a -1 position reads the last id: absent unless it is asked for
        if absent.any():
            missing = np.unique(batch_ids[absent])
            raise KdistillError(f"{self.path}: {missing.size} requested sample ids {_missing(missing)}")
        return positions

    def _gather(self, positions: np.ndarray, name: str, views: np.ndarray | None) -> np.ndarray:
        """Rows ``positions`` of tensor ``name`` (at ``views`` in a store with views), reading only
        those rows from each shard."""
        if views is not None and self.manifest.views is None:
            raise KdistillError(f"{self.path}: views requested, but the store was cached without views")
        if self.manifest.views is not None:
            views = np.zeros(len(positions), dtype=np.int64) if views is None else np.asarray(views, dtype=np.int64)
            if views.shape != positions.shape or views.min(initial=0) < 0 or views.max(initial=0) > self.manifest.views:
                raise KdistillError(f"{self.path}: views must be one per sample in 0..{self.manifest.views}")
        if self._whole is not None:  # take: a fraction of the time of fancy indexing on rows
            whole = self._whole[name]
            if views is None:
                return whole.take(positions, axis=0)
            per_view = whole.reshape(-1, *whole.shape[2:])
            return per_view.take(positions * whole.shape[1] + views, axis=0)
        shard_of, row = np.divmod(positions, self.manifest.shard_size)
        template = self._shards[0][name]
        per_sample = template.shape[1:] if views is None else template.shape[2:]
        out = np.empty((len(positions), *per_sample), dtype=template.dtype)
        for shard in np.unique(shard_of):
            here = shard_of == shard
            out[here] = (self._shards[shard][name][row[here]] if views is None
                         else self._shards[shard][name][row[here], views[here]])
        return out


def store_bytes_per_sample(path: str | Path) -> float:
    """On-disk size of a complete store (manifest and shards) divided by its sample count."""
    path = Path(path)
    manifest = _open_manifest(path)
    size = (path / MANIFEST).stat().st_size + sum((path / shard.file).stat().st_size for shard in manifest.shards)
    return size / manifest.total
