"""Fashion-MNIST from its four IDX ``.gz`` files (Debian package ``dataset-fashion-mnist``).

Where the files are looked for: ``data.path`` if given (and only there); otherwise the directory
``$KDISTILL_DATA`` or ``$KDISTILL_DATA/fashion-mnist``, then ``/usr/share/datasets/fashion-mnist``.
Ids: training image i → i, test image j → 60000 + j.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from kdistill.data.partition import split_indices
from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError, reading
from kdistill.recipe import DataConfig

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
TEST_ID_OFFSET = 60_000
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """A gzip-compressed IDX file of unsigned bytes as a uint8 array shaped by its header."""
    with reading(path, "a readable gzip IDX file", hint="the file is corrupt or truncated"), gzip.open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise KdistillError(f"{path}: not an IDX file of unsigned bytes (bad magic number {raw[:4].hex()})")
    header = 4 + 4 * raw[3]
    dims = struct.unpack(f">{raw[3]}I", raw[4:header]) if len(raw) >= header else None
    expected = None if dims is None else header + int(np.prod(dims))
    if len(raw) != expected:
        said = "is incomplete" if dims is None else f"says {dims}, i.e. {expected} bytes"
        raise KdistillError(f"{path}: truncated or corrupt IDX file: its header {said}, the file holds {len(raw)}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def find_dir(config: DataConfig) -> Path:
    """The first candidate directory that holds all four Fashion-MNIST files."""
    if config.path:
        places = [(Path(config.path).expanduser(), "data.path")]
    else:
        env = os.environ.get("KDISTILL_DATA")
        places = [(Path(env), "KDISTILL_DATA"), (Path(env) / "fashion-mnist", "KDISTILL_DATA")] if env else []
        places.append((SYSTEM_DIR, "dataset-fashion-mnist"))
    names = [name for pair in FILES.values() for name in pair]
    for directory, _ in places:
        if all((directory / name).is_file() for name in names):
            return directory
    looked = ", ".join(f"{directory} ({source})" for directory, source in places)
    raise KdistillError(
        f"data.dataset 'fashion_mnist': files not found; looked in {looked}. Install them with "
        f"`apt-get install dataset-fashion-mnist`, or set data.path or KDISTILL_DATA to a directory with "
        f"{', '.join(names)}"
    )


def _read_part(directory: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = (directory / name for name in FILES[part])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise KdistillError(
            f"{images_path}, {labels_path}: expected (N, 28, 28) images and N labels, got {images.shape} and {labels.shape}"
        )
    if labels.max(initial=0) > 9 or (part == "train" and len(images) > TEST_ID_OFFSET):
        raise KdistillError(f"{labels_path}: not Fashion-MNIST (labels above 9 or over {TEST_ID_OFFSET} training images)")
    x = images.reshape(-1, 1, 28, 28).astype(np.float32)
    x /= 255.0
    return x, labels.astype(np.int64)


def load_fashion_mnist(config: DataConfig) -> TaskData:
    """The official 60k/10k train/test split as float32 (N, 1, 28, 28) in [0, 1]; val is a seeded,
    stratified ``val_fraction`` of the training images."""
    directory = find_dir(config)
    x_train, y_train = _read_part(directory, "train")
    x_test, y_test = _read_part(directory, "test")
    full = Split(x_train, y_train, np.arange(len(y_train), dtype=np.int64))
    train, val, _ = split_indices(len(full), config.split_seed, config.val_fraction, strata=y_train)
    test = Split(x_test, y_test, TEST_ID_OFFSET + np.arange(len(y_test), dtype=np.int64))
    return TaskData("fashion_mnist", "classification", full.take(train), full.take(val), test, output_dim=10,
                    meta={"classes": list(CLASSES), "source": str(directory),
                          "preprocessing": "28x28 grey pixels 0..255 as (1, 28, 28) channels first, divided by 255"})
