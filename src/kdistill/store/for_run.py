"""Opening a recipe's ``teacher.store`` for a run, checked against that run's data and losses."""

from __future__ import annotations

import numpy as np

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.losses import CATALOGUE
from kdistill.recipe import Recipe
from kdistill.store.cache import sample_keys
from kdistill.store.reader import StoreReader


def open_store_for(recipe: Recipe, data: TaskData) -> StoreReader:
    """Open ``teacher.store`` and check it fits this run: same data (for a keyed source, the files
    added, removed or changed since caching are named), every training, transfer and
    test id present, the student's class count, dense logits for losses that read raw values, and
    for an augmenting run, views cached with the same augmentation (unless the teacher sees the
    clean samples: ``data.augment.teacher_sees``)."""
    store, augment = StoreReader(recipe.teacher.store), recipe.data.augment
    needed = [split.ids for split in (data.train, data.transfer, data.test) if split is not None]
    keyed = sample_keys(data)
    store.check(ids=np.concatenate(needed), num_classes=data.output_dim, dataset_fingerprint=data.fingerprint(),
                samples=None if keyed["keys"] is None else (keyed["keys"], keyed["digests"]),
                needs_dense=any(CATALOGUE[name].dense for name in recipe.losses),
                augment=None if augment is None or augment.teacher_sees == "clean" else augment.views())
    return store


def check_store_given(offline: bool, store: StoreReader | None) -> None:
    """A pipeline built for ``teacher.store`` trains from the opened store, and only then."""
    if offline != (store is not None):
        raise KdistillError("teacher.store: an offline run needs the opened store (open_store_for) and an online "
                            f"run takes none; got {'none' if store is None else store.path}")
