"""Small real sources on disk for the keyed-source tests: image folders written with Pillow, text
folders and tables, and the recipe that reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from conftest import default_raw, write_recipe


def image_array(seed: int, size: tuple[int, int] = (8, 8), channels: int = 1) -> np.ndarray:
    """A seeded uint8 image, (H, W) or (H, W, C)."""
    shape = size if channels == 1 else (*size, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, seed: int, size: tuple[int, int] = (8, 8), channels: int = 1, **save: object) -> np.ndarray:
    """Write a seeded image to ``path`` (format from its suffix); returns its pixels."""
    pixels = image_array(seed, size, channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save)
    return pixels


def image_folder(root: Path, per_class: int = 12, classes: tuple[str, ...] = ("cat", "dog"), order: list | None = None,
                 size: tuple[int, int] = (8, 8)) -> Path:
    """Class folders of PNG files ``<class>/<class>-<i>.png``, pixels seeded by (class, i); ``order``
    gives the order the files are created in (a permutation of (class, i) pairs)."""
    pairs = order or [(c, i) for c in range(len(classes)) for i in range(per_class)]
    for c, i in pairs:
        write_image(root / classes[c] / f"{classes[c]}-{i:03d}.png", 1000 * c + i, size)
    return root


def text_folder(root: Path, per_class: int = 12) -> Path:
    """Two class folders of UTF-8 ``.txt`` files with words typical of each class."""
    words = {"sport": "match goal team score", "money": "bank shares market price"}
    for name, text in words.items():
        for i in range(per_class):
            path = root / name / f"{i:03d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{text} number {i} café", encoding="utf-8")
    return root


def folder_recipe(path: Path, data: dict, task: str = "binary") -> Path:
    """A fast torch recipe (a small CNN teacher and student) on the source ``data``."""
    raw = default_raw()
    raw.update(task=task, data=data, teacher={"model": "cnn", "kwargs": {"channels": [4], "hidden": 8}},
               student={"model": "cnn", "kwargs": {"channels": [2], "hidden": 4}},
               losses={"binary_kd": {}} if task == "binary" else {"kd": {}},
               weights={"task": 0.5, "binary_kd" if task == "binary" else "kd": 0.5})
    raw.setdefault("train", {}).update(batch_size=16)
    return write_recipe(path, raw)
