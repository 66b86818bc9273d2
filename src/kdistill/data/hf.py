"""A Hugging Face ``datasets`` dataset read offline (``data.dataset: hf``; extra ``kdistill[hf]``).

``data.path`` is a folder written by ``save_to_disk`` (:func:`datasets.load_from_disk`), or
``data.hf.builder`` names a packaged builder (``imagefolder``, ``csv``, ``parquet``, ``json``,
``text``) that reads ``data.hf.data_files``; ``HF_DATASETS_OFFLINE`` is set, so nothing is fetched.
The split ``data.hf.split`` is read and split into train/val/test by key like every keyed source.

The input column (``data.hf.input``; default ``image``, else ``text``) is decoded when a batch is
read: images as an image folder's (``data.image``), texts through ``data.text``'s featurisation,
numeric columns as float32 arrays. Labels: a ``ClassLabel`` column's names, else the column's
values. Keys: ``data.hf.id``'s column, else the row number in the split. Content digests (for the
store) are BLAKE2b of each image's encoded bytes, text or array.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kdistill.data.images import decode_image, decoded_as, image_header
from kdistill.data.keyed import Listing, content_digest, keyed_task_data
from kdistill.data.samples import Indexed
from kdistill.data.splits import TaskData
from kdistill.data.text_encoding import TextEncoding, text_encoding
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig, HFConfig

FIELD = "data.hf"


def _datasets() -> Any:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise KdistillError("data.dataset: 'hf' needs the Hugging Face datasets library: pip install 'kdistill[hf]'") from None
    return datasets


def _open(config: DataConfig) -> Any:
    """The split ``data.hf.split`` of the configured dataset."""
    datasets, hf = _datasets(), config.hf or HFConfig()
    where = f"data.path: {config.path!r}" if hf.builder is None else f"{FIELD}.data_files: {hf.data_files!r}"
    try:
        if hf.builder is None:
            loaded = datasets.load_from_disk(str(Path(config.path).expanduser()))
        else:
            loaded = datasets.load_dataset(hf.builder, data_files=hf.data_files)
    except (OSError, ValueError, FileNotFoundError, datasets.exceptions.DatasetGenerationError) as error:
        raise KdistillError(f"{where}: not a dataset the datasets library can read offline ({error})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if hf.split not in loaded:
            raise KdistillError(f"{FIELD}.split: {hf.split!r} is not a split of {where}; it has {list(loaded)}")
        loaded = loaded[hf.split]
    return loaded


class HFSamples(Indexed):
    """The input column of a ``datasets.Dataset``, decoded on demand."""

    def __init__(self, dataset: Any, column: str, kind: str, listing: Listing, settings: dict,
                 sample_shape: tuple[int, ...], encoding: TextEncoding | None = None):
        self.dataset, self.column, self.kind, self.settings = dataset, column, kind, settings
        self.sample_shape, self.keys, self.digests = sample_shape, listing.keys, listing.digests
        self.encoding = encoding  # texts: how they become inputs
        if encoding is not None:
            self.sample_dtype = encoding.dtype

    def read(self, rows: np.ndarray) -> np.ndarray:
        values = self.dataset[[int(row) for row in rows]][self.column]
        if self.kind == "image":
            image = self.settings["image"]
            return np.stack([decode_image(value, tuple(image["size"]), image["mode"]) for value in values]) \
                if len(values) else np.empty((0, *self.sample_shape), np.float32)
        if self.kind == "text":
            return self.encoding(list(values))
        return np.asarray(values, dtype=np.float32).reshape(len(rows), *self.sample_shape)

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        digest.update(json.dumps(self.settings, sort_keys=True).encode())
        digest.update("\n".join((*self.keys, *self.digests)).encode())


def _image_bytes(value: dict) -> bytes:
    """The encoded bytes of an undecoded ``Image`` value (``{"bytes", "path"}``)."""
    if value.get("bytes") is not None:
        return value["bytes"]
    return Path(value["path"]).read_bytes()


def load_hf(config: DataConfig, task: str) -> TaskData:
    """The configured Hugging Face dataset as keyed splits."""
    datasets, hf = _datasets(), config.hf or HFConfig()
    dataset = _open(config)
    columns = list(dataset.column_names)
    column = hf.input or next((name for name in ("image", "text") if name in columns), None)
    for name, what in ((column, "input"), (hf.label, "label"), (hf.id, "id")):
        if what != "id" or name is not None:
            if name not in columns:
                raise KdistillError(f"{FIELD}.{what}: {name!r} is not a column of the dataset; its columns are {columns}")
    feature = dataset.features[column]
    kind = "image" if isinstance(feature, datasets.Image) else \
        "text" if getattr(feature, "dtype", None) in ("string", "large_string") else "array"
    label_feature = dataset.features[hf.label]
    raw_labels = dataset[hf.label]
    labels = [label_feature.int2str(int(value)) if isinstance(label_feature, datasets.ClassLabel) else str(value)
              for value in raw_labels]
    keys = [str(value) for value in dataset[hf.id]] if hf.id else [str(row) for row in range(len(dataset))]
    undecoded = dataset.cast_column(column, datasets.Image(decode=False)) if kind == "image" else dataset
    values = undecoded[column]
    if kind == "image":
        encoded = [_image_bytes(value) for value in values]
        digests = [content_digest(data) for data in encoded]
        headers = [image_header(data) for data in encoded]
    elif kind == "text":
        digests = [content_digest(f"{text}\x1f{label}".encode()) for text, label in zip(values, labels)]
    else:
        digests = [content_digest(np.asarray(value, dtype=np.float32).tobytes()) for value in values]
    listing = Listing(keys, labels, digests)
    encoding = text_encoding(config.text) if kind == "text" else None
    if kind == "image":
        size, mode = decoded_as(listing, headers, config, f"{FIELD}.input {column!r}")
        settings, sample_shape = {"image": {"size": list(size), "mode": mode}}, (1 if mode == "L" else 3, *size)
    elif encoding is not None:
        settings, sample_shape = encoding.settings, encoding.sample_shape
    else:
        settings, sample_shape = {"array": column}, np.asarray(values[0], dtype=np.float32).shape
    x = HFSamples(dataset, column, kind, listing, settings, sample_shape, encoding)
    meta = {"source": config.path or str(hf.data_files), "decode": settings, **(encoding.meta if encoding else {})}
    return keyed_task_data("hf", task, listing, x, config, f"{FIELD}: {hf.split!r}", meta)
