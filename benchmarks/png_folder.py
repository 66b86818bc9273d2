"""Fashion-MNIST as PNG files on disk, read back on demand: the streamed source the streaming
benchmarks train from. Every split's images are written as 8-bit grey PNGs (Pillow) into
``DIR/SPLIT/ID.png``; :class:`PngFiles` decodes only the rows asked for (÷ 255, exactly the
in-memory pixels), so a streamed run sees the same inputs as the in-memory one.

Imported as ``png_folder`` from the benchmark scripts' own directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from kdistill.data.samples import Samples
from kdistill.data.splits import TaskData

SPLITS = ("train", "val", "test", "transfer")


class PngFiles(Samples):
    """Grey 28×28 PNG files decoded on demand as float32 (N, 1, 28, 28) in [0, 1]."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), 1, 28, 28)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), 1, 28, 28), np.float32)
        for index, row in enumerate(rows):
            with Image.open(self.paths[row]) as image:
                out[index, 0] = np.asarray(image, dtype=np.float32)
        return out / np.float32(255.0)

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        for path in self.paths:
            digest.update(path.name.encode())


def write_png_folder(data: TaskData, directory: Path) -> None:
    """Every split's images of ``data`` (in memory, in [0, 1]) as ``directory/SPLIT/ID.png``."""
    for name in SPLITS:
        split = getattr(data, name)
        if split is None:
            continue
        (directory / name).mkdir(parents=True, exist_ok=True)
        pixels = np.rint(np.asarray(split.x) * 255).astype(np.uint8)
        for sample_id, image in zip(split.ids, pixels):
            Image.fromarray(image[0], mode="L").save(directory / name / f"{sample_id}.png")


def png_task_data(data: TaskData, directory: Path) -> TaskData:
    """``data`` with every split's inputs read from the PNG files :func:`write_png_folder` wrote."""
    splits = {name: dataclasses.replace(split, x=PngFiles([directory / name / f"{i}.png" for i in split.ids]))
              for name in SPLITS if (split := getattr(data, name)) is not None}
    return dataclasses.replace(data, **splits)
