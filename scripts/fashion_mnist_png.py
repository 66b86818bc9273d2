"""Write Fashion-MNIST out as PNG files in class folders: an image folder for ``image_folder`` recipes.

    python scripts/fashion_mnist_png.py --out data/fashion-png [--limit 500] [--classes 0,6] [--part train]

Reads the IDX files where ``data.dataset: fashion_mnist`` finds them (the Debian package
``dataset-fashion-mnist``, ``$KDISTILL_DATA`` or ``--source``) and writes ``OUT/<class>/<id>.png``
(8-bit grey, 28x28), ``<class>`` a folder name made from the class name (``shirt``,
``t-shirt-top``) and ``<id>`` the image's Fashion-MNIST id (training image i is i, test image j is
60000 + j), so a file keeps its identity across exports. ``--limit`` keeps the first N images of
each class; ``--classes`` keeps those class numbers. ``OUT`` must be new or empty.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kdistill.data.fashion_mnist import CLASSES, FILES, TEST_ID_OFFSET, find_dir, read_idx
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig


def folder_name(class_index: int) -> str:
    """The class folder of a Fashion-MNIST class: its name, lower-case, runs of other characters as '-'."""
    return re.sub(r"[^a-z0-9]+", "-", CLASSES[class_index].lower()).strip("-")


def write_pngs(out: Path, *, limit: int | None = None, classes: list[int] | None = None,
               parts: tuple[str, ...] = ("train", "test"), source: str | None = None) -> int:
    """Write the chosen images as PNG files under ``out``; returns how many were written."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KdistillError(f"--out: {str(out)!r} exists and is not an empty directory")
    classes = list(range(len(CLASSES))) if classes is None else classes
    bad = [c for c in classes if not 0 <= c < len(CLASSES)]
    if bad:
        raise KdistillError(f"--classes: {bad} are not Fashion-MNIST classes (0..{len(CLASSES) - 1})")
    directory = find_dir(DataConfig(dataset="fashion_mnist", path=source))
    written = {c: 0 for c in classes}
    for part in parts:
        images, labels = (read_idx(directory / name) for name in FILES[part])
        offset = TEST_ID_OFFSET if part == "test" else 0
        for c in classes:
            folder = out / folder_name(c)
            folder.mkdir(parents=True, exist_ok=True)
            rows = np.flatnonzero(labels == c)
            if limit is not None:
                rows = rows[: max(limit - written[c], 0)]
            for row in rows:
                Image.fromarray(images[row], mode="L").save(folder / f"{offset + row:05d}.png")
            written[c] += len(rows)
    return sum(written.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="new or empty directory to write the class folders to")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per class")
    parser.add_argument("--classes", default=None, help="comma-separated class numbers, e.g. 0,6 (default: all ten)")
    parser.add_argument("--part", choices=("train", "test", "both"), default="both", help="which official split(s)")
    parser.add_argument("--source", default=None, help="directory holding the four IDX .gz files")
    args = parser.parse_args(argv)
    try:
        classes = None if args.classes is None else [int(c) for c in args.classes.split(",")]
        parts = ("train", "test") if args.part == "both" else (args.part,)
        count = write_pngs(args.out, limit=args.limit, classes=classes, parts=parts, source=args.source)
    except ValueError:
        print(f"kdistill: error: --classes: {args.classes!r} is not a comma-separated list of numbers", file=sys.stderr)
        return 2
    except KdistillError as error:
        print(f"kdistill: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {count} PNG files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
