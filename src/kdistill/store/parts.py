"""A store written by N processes at once (``kdistill cache --nproc N``).

Process r of N caches a contiguous run of whole shards — the r-th share of the store's shards —
as a complete store of its own in ``STORE/part-R`` (atomic and resumable like any store). Once
every part is complete, :func:`assemble` hard-links the parts' shards into ``STORE`` under their
global shard names and writes the one manifest, last. Shards hold only ids and logits, so with a
batch size that divides the shard size the assembled store is byte-identical to a one-process
cache. A run killed at any point is completed by running it again with the same N.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kdistill.errors import KdistillError
from kdistill.store.manifest import MANIFEST, Manifest, ShardInfo, load_manifest, shard_name, verify_shard
from kdistill.store.writer import atomic_write, check_store_dir


def part_range(total: int, shard_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The [start, end) samples of part ``rank``: whole shards, split as evenly as they go."""
    shards = -(-total // shard_size)
    first, last = shards * rank // world_size, shards * (rank + 1) // world_size
    return min(first * shard_size, total), min(last * shard_size, total)


def part_path(store: Path, rank: int) -> Path:
    return store / f"part-{rank:03d}"


def assemble(store: Path, world_size: int, expected: Manifest) -> Manifest:
    """Join the complete parts 0..N−1 of ``store`` into one store with the settings of
    ``expected`` (a manifest without shards); returns the final manifest. Parts are removed only
    after the manifest is written."""
    check_store_dir(store)
    shards: list[ShardInfo] = []
    for rank in range(world_size):
        start, end = part_range(expected.total, expected.shard_size, rank, world_size)
        if start == end:
            continue
        part = part_path(store, rank)
        if not (part / MANIFEST).exists():
            raise KdistillError(f"{part}: part {rank} of {world_size} is not complete; run the cache again to finish it")
        manifest = load_manifest(part / MANIFEST)
        for shard in manifest.shards:
            verify_shard(part, shard)
            target = store / shard_name(len(shards))
            target.unlink(missing_ok=True)
            os.link(part / shard.file, target)
            shards.append(shard.model_copy(update={"file": target.name}))
    final = expected.model_copy(update={"shards": shards, "complete": True})
    final = Manifest.model_validate(final.model_dump())  # checks shard names and counts
    atomic_write(store / MANIFEST, final.to_json())
    for rank in range(world_size):
        shutil.rmtree(part_path(store, rank), ignore_errors=True)
    return final
