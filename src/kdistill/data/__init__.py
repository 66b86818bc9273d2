"""Datasets as framework-neutral splits with stable sample ids, plus transfer sets.

``load_task_data(config, task)`` is the one entry point: it loads ``config.dataset``, checks it
fits the recipe's task, keeps ``limit`` training samples, then carves or reads the transfer set.
Keyed sources (image and text folders, text tables, Hugging Face datasets) key every sample by a
string (:mod:`kdistill.data.keyed`); :func:`from_samples` keys a Python sequence or iterable.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from kdistill.data.arrays import load_arrays, read_inputs
from kdistill.data.augment import check_images
from kdistill.data.bbc_news import load_bbc_news
from kdistill.data.embedded import load_breast_cancer, load_digits
from kdistill.data.fashion_mnist import load_fashion_mnist
from kdistill.data.images import load_image_folder, transfer_images
from kdistill.data.iterables import from_samples
from kdistill.data.keyed import KEYED_TASKS, unique_key_ids
from kdistill.data.ranking import load_movielens, load_synthetic
from kdistill.data.splits import TASKS, Split, TaskData
from kdistill.data.text import load_text_folder, load_text_table, transfer_texts
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig

__all__ = ["Split", "TaskData", "from_samples", "load_task_data"]

LOADERS = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "fashion_mnist": load_fashion_mnist,
    "synthetic_ranking": load_synthetic,
    "movielens": load_movielens,
}


def _load_hf(config: DataConfig, task: str) -> TaskData:
    from kdistill.data.hf import load_hf  # imports the datasets library only when asked for

    return load_hf(config, task)


KEYED_LOADERS = {
    "image_folder": load_image_folder,
    "text_folder": load_text_folder,
    "text_table": load_text_table,
    "bbc_news": load_bbc_news,
    "hf": _load_hf,
}
"""Keyed sources, called with (config, task)."""
FOLDER_TRANSFER = {"image_folder": transfer_images, "text_folder": transfer_texts, "bbc_news": transfer_texts}
"""Keyed sources whose transfer set may be a folder of unlabeled files."""
DATASET_TASKS = {
    "digits": ("classification",),
    "breast_cancer": ("binary",),
    "fashion_mnist": ("classification",),
    "synthetic_ranking": ("ranking",),
    "movielens": ("ranking",),
    "arrays": TASKS,
    **{name: KEYED_TASKS for name in KEYED_LOADERS},
}


def load_task_data(config: DataConfig, task: str) -> TaskData:
    """The splits of ``config.dataset`` for ``task``.

    ``limit`` keeps that many training samples, chosen by a shuffle seeded with ``split_seed``; the
    transfer set is then taken from what remains (``transfer.fraction``) or read (``transfer.path``).
    """
    if task not in TASKS:
        raise KdistillError(f"task: {task!r} is not a task; allowed: {', '.join(TASKS)}")
    if task not in DATASET_TASKS[config.dataset]:
        fitting = [name for name, tasks in DATASET_TASKS.items() if task in tasks]
        raise KdistillError(
            f"data.dataset: {config.dataset!r} gives {DATASET_TASKS[config.dataset][0]} data, recipe task is "
            f"{task!r}; for {task} use data.dataset: {' or '.join(fitting)}"
        )
    if config.dataset == "arrays":
        data = load_arrays(config, task)
    elif config.dataset in KEYED_LOADERS:
        data = KEYED_LOADERS[config.dataset](config, task)
    else:
        data = LOADERS[config.dataset](config)
    if config.limit is not None and config.limit < len(data.train):
        order = np.random.default_rng((config.split_seed, 1)).permutation(len(data.train))
        data = replace(data, train=data.train.take(np.sort(order[: config.limit])))
    if config.transfer is not None:
        data = _with_transfer(data, config)
    if config.classes is not None:
        data = _specialist(data, config.classes)
    if config.augment is not None:
        check_images(data.input_shape, config.augment)
    return data


def _specialist(data: TaskData, classes: list[int]) -> TaskData:
    """``data`` relabeled for a specialist: ``classes[i]`` → i, every other class → the dustbin
    ``len(classes)``. ``meta["specialist"]`` records the classes and the fingerprint of the data
    with all its classes, which a store of this specialist's outputs carries into the merge."""
    from kdistill.store.specialists import check_classes

    if data.task != "classification":
        raise KdistillError(f"data.classes: specialists are for classification, the recipe task is {data.task!r}")
    subset = check_classes(classes, data.output_dim, "data.classes")
    labels = np.full(data.output_dim, len(subset), dtype=np.int64)
    labels[subset] = np.arange(len(subset))
    relabel = {name: replace(split, y=labels[split.y]) for name, split in
               (("train", data.train), ("val", data.val), ("test", data.test))}
    meta = {**data.meta, "specialist": {"classes": subset.tolist(), "all_classes_fingerprint": data.fingerprint()}}
    return replace(data, **relabel, output_dim=len(subset) + 1, meta=meta)


def _with_transfer(data: TaskData, config: DataConfig) -> TaskData:
    """``data`` with an unlabeled transfer split (y=None)."""
    train, transfer, seed = data.train, config.transfer, config.split_seed
    if transfer.path is not None and Path(transfer.path).expanduser().is_dir():
        return _transfer_folder(data, config)
    if transfer.fraction is not None:
        n = int(len(train) * transfer.fraction + 0.5)
        if not 0 < n < len(train):
            raise KdistillError(
                f"data.transfer.fraction: {transfer.fraction} of {len(train)} training samples gives {n} to the "
                f"transfer set; both it and the training set need samples, so change the fraction (or data.limit)"
            )
        order = np.random.default_rng((seed, 2)).permutation(len(train))
        held = train.take(np.sort(order[:n]))
        return replace(data, train=train.take(np.sort(order[n:])),
                       transfer=Split(held.x, None, held.ids, held.keys, held.digests))
    x = read_inputs(Path(transfer.path).expanduser(), "data.transfer.path")
    shape = train.x.shape[1:]
    if x.ndim == 2 and len(shape) > 1 and x.shape[1] == np.prod(shape):
        x = x.reshape(-1, *shape)  # flat rows (CSV) of image-shaped inputs
    if x.shape[1:] != shape:
        raise KdistillError(
            f"data.transfer.path: {transfer.path!r} holds inputs shaped {x.shape[1:]} per sample, the training "
            f"inputs are {shape}; give inputs of the training shape"
        )
    first = max(int(split.ids.max(initial=-1)) for split in (data.train, data.val, data.test)) + 1
    ids = np.arange(first, first + len(x), dtype=np.int64)
    return replace(data, transfer=Split(x.astype(train.x.dtype), None, ids))


def _transfer_folder(data: TaskData, config: DataConfig) -> TaskData:
    """``data`` with the folder of unlabeled files ``data.transfer.path`` as its transfer split."""
    if data.name not in FOLDER_TRANSFER:
        raise KdistillError(f"data.transfer.path: {config.transfer.path!r} is a folder; a folder of unlabeled files is "
                            f"a transfer set for {' or '.join(FOLDER_TRANSFER)}, for {data.name!r} give a .npy, .npz or "
                            ".csv file of inputs")
    transfer, bad = FOLDER_TRANSFER[data.name](config.transfer.path, data, config)
    keys = np.concatenate([split.keys for split in (data.train, data.val, data.test, transfer)])
    unique_key_ids(keys, "data.transfer.path: the transfer and training folders together")
    return replace(data, transfer=transfer, meta={**data.meta, "transfer_bad_samples": bad})
