"""The store manifest and the checks shared by the writer and the reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdistill.errors import KdistillError, reading

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARTIAL_MANIFEST = "manifest.partial.json"
SETTINGS = (
    "format_version",
    "kdistill_version",
    "teacher",
    "dataset_fingerprint",
    "num_classes",
    "dtype",
    "k",
    "views",
    "augment",
    "shard_size",
    "total",
    "ids_sha256",
    "keys",
    "digests",
)
"""The manifest fields a resumed cache run must repeat exactly."""


def shard_name(index: int) -> str:
    """The file name of shard ``index``."""
    return f"shard-{index:05d}.safetensors"


def ids_sha256(ids: np.ndarray) -> str:
    """sha256 of the ids as little-endian int64, in order."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


def changed_samples(stored_keys: list[str], stored_digests: list[str], keys: list[str],
                    digests: list[str], shown: int = 5) -> str | None:
    """What differs between the keyed samples a store was cached from and ``keys``/``digests``
    now: the samples added, removed and changed (same key, other content), each counted with its
    first few keys (sorted); None when they are the same samples."""
    before, now = dict(zip(stored_keys, stored_digests)), dict(zip(keys, digests))
    groups = (("added", sorted(now.keys() - before.keys())), ("removed", sorted(before.keys() - now.keys())),
              ("changed", sorted(key for key in now.keys() & before.keys() if now[key] != before[key])))
    parts = [f"{len(found)} {what} ({', '.join(repr(key) for key in found[:shown])}"
             f"{f' and {len(found) - shown} more' if len(found) > shown else ''})" for what, found in groups if found]
    return ", ".join(parts) or None


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ShardInfo(BaseModel):
    """One finished shard: its file, sample count, sha256 of its bytes and first/last sample id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    count: int = Field(ge=1)
    sha256: str
    first_id: int
    last_id: int


class Manifest(BaseModel):
    """What a store holds; ``complete`` only once every expected sample is in a finished shard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = FORMAT_VERSION
    kdistill_version: str
    complete: bool = False
    teacher: dict[str, Any]
    dataset_fingerprint: str
    num_classes: int = Field(ge=1)
    dtype: Literal["float32", "float16"]
    k: int | None = Field(None, ge=1)
    views: int | None = Field(None, ge=1)
    augment: dict[str, Any] | None = None
    shard_size: int = Field(ge=1)
    total: int = Field(ge=1)
    ids_sha256: str
    keys: list[str] | None = None
    """A keyed source's sample keys (relative file paths, a table's ids), in store order."""
    digests: list[str] | None = None
    """The content digest of each keyed sample (BLAKE2b of its file's bytes), in store order."""
    shards: list[ShardInfo] = []

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if self.k is not None and self.k > self.num_classes:
            raise ValueError(f"k={self.k} exceeds num_classes={self.num_classes}")
        if (self.keys is None) != (self.digests is None) or \
                self.keys is not None and not len(self.keys) == len(self.digests) == self.total:
            raise ValueError(f"keys and digests come together, one per sample ({self.total})")
        if (self.views is None) != (self.augment is None):
            raise ValueError("views and augment come together: cached views need the augmentation that made them")
        for index, shard in enumerate(self.shards):
            expected = min(self.shard_size, self.total - index * self.shard_size)
            if shard.file != shard_name(index) or shard.count != expected:
                raise ValueError(
                    f"shards[{index}] is {shard.file!r} with {shard.count} samples;"
                    f" expected {shard_name(index)!r} with {expected}"
                )
        if self.complete and self.stored != self.total:
            raise ValueError(f"marked complete but its shards hold {self.stored} of {self.total} samples")
        return self

    @property
    def stored(self) -> int:
        """Samples in finished shards."""
        return sum(shard.count for shard in self.shards)

    @property
    def rows(self) -> tuple[int, ...]:
        """The per-sample leading shape of every output tensor: () or, with views, (views + 1,)."""
        return () if self.views is None else (self.views + 1,)

    def tensor_layout(self, count: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """The tensors (name → dtype, shape) a shard of ``count`` samples must hold."""
        layout = {"ids": (np.dtype("<i8"), (count,))}
        per_sample = (count, *self.rows)
        if self.k is None:
            layout["logits"] = (np.dtype(self.dtype), (*per_sample, self.num_classes))
        else:
            layout["indices"] = (np.dtype("<i4"), (*per_sample, self.k))
            layout["values"] = (np.dtype(self.dtype), (*per_sample, self.k))
            layout["tail_logsumexp"] = (np.dtype("<f4"), per_sample)
        return layout

    def to_json(self) -> bytes:
        """Deterministic JSON (sorted keys, nothing time-dependent): equal manifests, equal bytes."""
        return (json.dumps(self.model_dump(), indent=2, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes | dict[str, Any], source: str) -> Manifest:
    """Validate manifest JSON or fields; a KdistillError names ``source``, the field and the bad value."""
    try:
        return Manifest.model_validate_json(data) if isinstance(data, bytes) else Manifest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "manifest"
        shown = "" if first["type"] in ("json_invalid", "value_error") else f" (got {first['input']!r})"
        raise KdistillError(f"{source}: {field}: {first['msg']}{shown}") from None


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file."""
    with reading(path, "a store manifest (JSON)"):
        data = path.read_bytes()
    return parse_manifest(data, str(path))


def verify_shard(directory: Path, shard: ShardInfo) -> None:
    """Raise KdistillError unless the shard file exists and its sha256 is the manifest's."""
    path = directory / shard.file
    if not path.is_file():
        raise KdistillError(f"{path}: shard listed in the manifest is missing")
    with reading(path, "a safetensors shard"):
        actual = file_sha256(path)
    if actual != shard.sha256:
        raise KdistillError(
            f"{path}: checksum mismatch, the shard is damaged (manifest sha256 {shard.sha256}, file sha256"
            f" {actual}); delete the store and run the cache again"
        )
