"""``kdistill cache`` for PyTorch teachers: run a trained teacher over every split of a recipe's
data (train, val, test, transfer) and write its raw outputs to a soft-target store.

Resumable: a killed run, started again with the same settings, continues after the last
complete shard and ends with the same bytes as an uninterrupted run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdistill.data.augment import augment as augment_views
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.progress import console, sample_progress
from kdistill.recipe import AugmentConfig, Recipe
from kdistill.store import MANIFEST, StoreWriter
from kdistill.store.parts import assemble, part_path, part_range
from kdistill.store.writer import new_manifest
from kdistill.torch import distributed
from kdistill.store.manifest import file_sha256
from kdistill.torch.models import build_model
from kdistill.torch.pipeline import choose_device
from kdistill.torch.trainer import predict


def cache_teacher(recipe: Recipe, data: TaskData, store: Path, *, dtype: str = "float32", k: int | None = None,
                  views: int | None = None, shard_size: int = 8192, batch_size: int = 1024,
                  overwrite: bool = False) -> dict:
    """Write the teacher's logits for every sample of ``data`` to ``store``; returns a summary.

    With ``views`` = K, each sample is stored at K + 1 views of ``data.augment``: view 0 the sample
    itself (what evaluation reads), views 1..K the augmentations a student replays in training."""
    if recipe.teacher.path is None:
        raise KdistillError("teacher.path: kdistill cache needs a trained teacher, e.g. "
                            "--set teacher.path=runs/NAME/teacher.safetensors from a kdistill run")
    augment = recipe.data.augment
    if views is not None and augment is None:
        raise KdistillError(f"--views: {views} views need the recipe's data.augment (shift and/or flip) to draw them")
    device = distributed.local_device(choose_device(recipe.train.device))
    teacher, spec = build_model(recipe.teacher, data, "teacher")
    teacher.to(device).eval()
    splits = [split for split in (data.train, data.val, data.test, data.transfer) if split is not None]
    ids = np.concatenate([split.ids for split in splits])
    x = np.concatenate([split.x for split in splits])
    settings = {"num_classes": data.output_dim, "dataset_fingerprint": data.fingerprint(), "dtype": dtype, "k": k,
                "views": views, "augment": None if views is None else augment.model_dump(), "shard_size": shard_size,
                "teacher": {"backend": "torch", "path": str(recipe.teacher.path),
                            "sha256": file_sha256(Path(recipe.teacher.path)), "spec": spec,
                            **data.meta.get("specialist", {})}}
    ranks = distributed.setup(device)
    try:
        if ranks is None:
            return _cache_part(teacher, device, ids, x, store, settings, overwrite, batch_size, augment)
        return _cache_distributed(ranks, teacher, device, ids, x, store, settings, overwrite, batch_size, augment)
    finally:
        distributed.teardown()


def _cache_distributed(ranks: distributed.Ranks, teacher: nn.Module, device: torch.device, ids: np.ndarray,
                       x: np.ndarray, store: Path, settings: dict, overwrite: bool, batch_size: int,
                       augment: AugmentConfig | None) -> dict:
    """This rank's whole shards into ``STORE/part-R``; then rank 0 joins the parts (:mod:`kdistill.store.parts`)."""
    if (store / MANIFEST).exists() and not overwrite:
        raise KdistillError(f"{store} already holds a complete store; pass --overwrite to replace it")
    start, end = part_range(len(ids), settings["shard_size"], ranks.rank, ranks.world_size)
    summary = {"samples": 0, "written": 0, "seconds": 0.0, "shards": 0}
    finished = (part_path(store, ranks.rank) / MANIFEST).exists() and not overwrite  # a rerun after a crash
    if start < end and not finished:
        summary = _cache_part(teacher, device, ids[start:end], x[start:end], part_path(store, ranks.rank), settings,
                              overwrite, batch_size, augment)
    distributed.barrier()
    if ranks.rank == 0:
        manifest = assemble(store, ranks.world_size, new_manifest(ids, **settings))
        console.print(f"joined {ranks.world_size} parts into {len(manifest.shards)} shards at {store}")
    distributed.barrier()
    return summary


def _cache_part(teacher: nn.Module, device: torch.device, ids: np.ndarray, x: np.ndarray, store: Path,
                settings: dict, overwrite: bool, batch_size: int, augment: AugmentConfig | None) -> dict:
    """Cache the teacher's outputs for ``ids`` (inputs ``x``) as one store (resuming a killed run)."""
    views = settings["views"]
    writer = StoreWriter(store, ids=ids, overwrite=overwrite, **settings)
    num_classes = settings["num_classes"]
    started = time.perf_counter()
    with sample_progress("cache", len(ids), writer.resume_from) as progress:
        for start in range(writer.resume_from, len(ids), batch_size):
            batch_ids = ids[start:start + batch_size]
            inputs = [x[start:start + batch_size]]
            if views is not None:
                inputs += [augment_views(inputs[0], batch_ids, np.full(len(batch_ids), view), augment)
                           for view in range(1, views + 1)]
            logits = np.stack([predict(teacher, torch.from_numpy(np.ascontiguousarray(view_x)).to(device), batch_size)
                               for view_x in inputs], axis=1)
            if logits.shape[2:] != (num_classes,):
                raise KdistillError(f"teacher: outputs {logits.shape[2:]} per sample, the data needs ({num_classes},)")
            writer.write(batch_ids, logits.astype(np.float32) if views is not None else logits[:, 0].astype(np.float32))
            progress(len(batch_ids))
    manifest = writer.close()
    seconds = time.perf_counter() - started
    written = len(ids) - writer.resume_from
    console.print(f"cached {len(ids)} samples ({written} this run, {written / max(seconds, 1e-9):,.0f} samples/s) "
                  f"in {len(manifest.shards)} shards at {store}")
    return {"samples": len(ids), "written": written, "seconds": seconds, "shards": len(manifest.shards)}
