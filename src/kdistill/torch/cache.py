"""``kdistill cache --nproc N`` for PyTorch teachers: under torchrun, one part of the store per
process, joined by the main one (:mod:`kdistill.store.parts`); in one process, the shared loop of
:mod:`kdistill.store.cache`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdistill.data.samples import Samples
from kdistill.data.splits import TaskData
from kdistill.data.stream import rows_between
from kdistill.errors import KdistillError
from kdistill.progress import console
from kdistill.recipe import Recipe
from kdistill.store import MANIFEST
from kdistill.store.cache import Predict, cache_inputs, cache_outputs, check_cacheable, store_settings
from kdistill.store.parts import assemble, part_path, part_range
from kdistill.store.writer import new_manifest
from kdistill.teacher import teacher_predict
from kdistill.torch import distributed
from kdistill.torch.backend import BACKEND


def cache_teacher(recipe: Recipe, data: TaskData, store: Path, *, dtype: str = "float32", k: int | None = None,
                  views: int | None = None, shard_size: int = 8192, batch_size: int = 1024,
                  overwrite: bool = False) -> dict:
    """Write the teacher's logits for every sample of ``data`` to ``store``; returns a summary.

    With ``views`` = K, each sample is stored at K + 1 views of ``data.augment``: view 0 the sample
    itself (what evaluation reads), views 1..K the augmentations a student replays in training."""
    check_cacheable(recipe, views)
    run, spec = teacher_predict(recipe, data, batch_size, BACKEND)
    settings = store_settings(recipe, data, "torch", spec, dtype=dtype, k=k, views=views, shard_size=shard_size)
    ids, x = cache_inputs(data)
    options = {"overwrite": overwrite, "batch_size": batch_size, "augment": recipe.data.augment,
               "workers": recipe.train.workers}
    ranks = distributed.setup(BACKEND.device(recipe.train.device))
    try:
        if ranks is None:
            return cache_outputs(run, ids, x, store, settings, **options)
        return _cache_distributed(ranks, run, ids, x, store, settings, options)
    finally:
        distributed.teardown()


def _cache_distributed(ranks: distributed.Ranks, teacher_predict: Predict, ids: np.ndarray, x: np.ndarray | Samples,
                       store: Path, settings: dict, options: dict) -> dict:
    """This rank's whole shards into ``STORE/part-R``; then rank 0 joins the parts."""
    if (store / MANIFEST).exists() and not options["overwrite"]:
        raise KdistillError(f"{store} already holds a complete store; pass --overwrite to replace it")
    start, end = part_range(len(ids), settings["shard_size"], ranks.rank, ranks.world_size)
    summary = {"samples": 0, "written": 0, "seconds": 0.0, "shards": 0}
    finished = (part_path(store, ranks.rank) / MANIFEST).exists() and not options["overwrite"]  # a rerun after a crash
    if start < end and not finished:
        summary = cache_outputs(teacher_predict, ids[start:end], rows_between(x, start, end), part_path(store, ranks.rank),
                                settings, **options)
    distributed.barrier()
    if ranks.rank == 0:
        manifest = assemble(store, ranks.world_size, new_manifest(ids, **settings))
        console.print(f"joined {ranks.world_size} parts into {len(manifest.shards)} shards at {store}")
    distributed.barrier()
    return summary
