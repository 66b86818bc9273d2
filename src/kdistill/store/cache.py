"""Caching a teacher's outputs: the framework-neutral loop of ``kdistill cache``. A backend gives
the teacher as ``predict(x) -> logits`` on numpy batches; this module runs it over every sample
(and every augmentation view) and writes the store, resuming a killed run.

Resumable: a killed run, started again with the same settings, continues after the last
complete shard and ends with the same bytes as an uninterrupted run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdistill.data.augment import augment as augment_views
from kdistill.data.samples import Samples, concatenate
from kdistill.data.splits import Split, TaskData
from kdistill.data.stream import read_batches
from kdistill.errors import KdistillError
from kdistill.progress import console, sample_progress
from kdistill.recipe import AugmentConfig, Recipe
from kdistill.store.manifest import file_sha256
from kdistill.store.writer import StoreWriter

if TYPE_CHECKING:
    from kdistill.backends.contract import Backend

Predict = Callable[[np.ndarray], np.ndarray]


def cache_splits(data: TaskData) -> list[Split]:
    """The splits a store of ``data`` holds, in store order: train, val, test, transfer."""
    return [split for split in (data.train, data.val, data.test, data.transfer) if split is not None]


def cache_inputs(data: TaskData) -> tuple[np.ndarray, np.ndarray | Samples]:
    """(ids, inputs) of every sample a store of ``data`` holds, in store order; inputs read on
    demand stay so (a batch is decoded when it is cached)."""
    splits = cache_splits(data)
    return np.concatenate([split.ids for split in splits]), concatenate([split.x for split in splits])


def sample_keys(data: TaskData) -> dict[str, list[str] | None]:
    """The manifest's ``keys`` and ``digests`` of a keyed source's samples in store order (None for
    data without keys)."""
    splits = cache_splits(data)
    if any(split.keys is None or split.digests is None for split in splits):
        return {"keys": None, "digests": None}
    return {"keys": np.concatenate([split.keys for split in splits]).tolist(),
            "digests": np.concatenate([split.digests for split in splits]).tolist()}


def check_cacheable(recipe: Recipe, views: int | None) -> None:
    """A cache run needs a trained teacher, and views need the augmentation that draws them."""
    if recipe.teacher.path is None:
        raise KdistillError("teacher.path: kdistill cache needs a trained teacher, e.g. "
                            "--set teacher.path=runs/NAME/teacher.safetensors (.keras for Keras) from a kdistill run")
    if views is not None and recipe.data.augment is None:
        raise KdistillError(f"--views: {views} views need the recipe's data.augment (shift and/or flip) to draw them")


def store_settings(recipe: Recipe, data: TaskData, backend: str, spec: dict[str, Any], *, dtype: str,
                   k: int | None, views: int | None, shard_size: int) -> dict[str, Any]:
    """The store settings (:func:`kdistill.store.writer.new_manifest`) of caching ``teacher.path``
    (checked first with :func:`check_cacheable`)."""
    path = Path(recipe.teacher.path)
    return {"num_classes": data.output_dim, "dataset_fingerprint": data.fingerprint(), "dtype": dtype, "k": k,
            "views": views, "augment": None if views is None else recipe.data.augment.views(),
            "shard_size": shard_size, **sample_keys(data),
            "teacher": {"backend": backend, "path": str(path),
                        "sha256": file_sha256(path) if path.is_file() else None, "spec": spec,
                        **data.meta.get("specialist", {})}}


def cache_teacher(recipe: Recipe, data: TaskData, store: Path, backend: "Backend", *,
                  dtype: str = "float32", k: int | None = None, views: int | None = None, shard_size: int = 8192,
                  batch_size: int = 1024, overwrite: bool = False) -> dict:
    """Cache the trained teacher of ``teacher.path``, run by ``backend``, over every sample of
    ``data``, in one process."""
    from kdistill.teacher import teacher_predict

    check_cacheable(recipe, views)
    predict, spec = teacher_predict(recipe, data, batch_size, backend)
    settings = store_settings(recipe, data, recipe.backend, spec, dtype=dtype, k=k, views=views, shard_size=shard_size)
    ids, x = cache_inputs(data)
    return cache_outputs(predict, ids, x, store, settings, overwrite=overwrite, batch_size=batch_size,
                         augment=recipe.data.augment, workers=recipe.train.workers)


def cache_outputs(predict: Predict, ids: np.ndarray, x: np.ndarray | Samples, store: Path, settings: dict[str, Any], *,
                  overwrite: bool, batch_size: int, augment: AugmentConfig | None, workers: int | None = None) -> dict:
    """Cache the teacher's outputs for ``ids`` (inputs ``x``) as one store (resuming a killed run);
    streamed inputs are read a batch at a time by ``workers`` reader threads."""
    views = settings["views"]
    writer = StoreWriter(store, ids=ids, overwrite=overwrite, **settings)
    num_classes = settings["num_classes"]
    started = time.perf_counter()
    with sample_progress("cache", len(ids), writer.resume_from) as progress:
        batches = read_batches(x, batch_size, workers, start=writer.resume_from)
        for start, batch in zip(range(writer.resume_from, len(ids), batch_size), batches):
            batch_ids = ids[start:start + batch_size]
            inputs = [batch]
            if views is not None:
                inputs += [augment_views(inputs[0], batch_ids, np.full(len(batch_ids), view), augment)
                           for view in range(1, views + 1)]
            logits = np.stack([predict(np.ascontiguousarray(view_x)) for view_x in inputs], axis=1)
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
