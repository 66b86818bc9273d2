"""Image folders (``data.dataset: image_folder``), decoded with Pillow into float32 (C, H, W) in [0, 1].

Layouts: ``data.path`` holds one sub-folder per class (class names: the sorted folder names), or
it is a flat folder and ``data.labels`` a CSV with a ``file`` column (paths relative to
``data.path``) and a ``label`` column; a folder of unlabeled images serves as a transfer set
(``data.transfer.path``). Keys are the files' relative POSIX paths.

Bad files are found when the folder is listed: every file is read once, its bytes digested
(BLAKE2b) and checked by Pillow (``Image.open`` and ``verify``: the header, and for PNG the chunk
checksums). A file that fails goes to ``data.on_bad_sample``: an error naming it, or ``skip``
(counted in ``meta["bad_samples"]``). Pixel data that still fails to decode when a batch is read
(possible for formats ``verify`` does not fully check, such as a truncated JPEG) stops the run
with an error naming the file, whatever the policy: a batch cannot drop a sample mid-epoch.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from kdistill.data.files import (TRANSFER_FIELD, FileSamples, class_folders, existing_dir, list_files, transfer_split,
                                 unlabeled_files)
from kdistill.data.keyed import BadSamples, Listing, keyed_task_data, listed
from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError, reading
from kdistill.recipe import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
"""Pillow modes decoded as one channel (``L``); every other mode is decoded as ``RGB``."""
FILE_COLUMNS = ("file", "filename", "path", "image", "key", "id")
LABEL_COLUMNS = ("label", "class")
WHAT = "an image Pillow can read"


def image_header(data: bytes) -> tuple[tuple[int, int], str]:
    """((H, W), "L" or "RGB") of an image file's bytes, after Pillow's ``verify``."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("its bytes are in no image format Pillow knows") from None
    with image:
        (width, height), mode = image.size, image.mode
        image.verify()
    return (height, width), "L" if mode in GREY_MODES else "RGB"


def decode_image(image: "object", size: tuple[int, int], mode: str) -> np.ndarray:
    """A Pillow image as float32 (C, H, W) in [0, 1], converted to ``mode`` and resized to ``size``."""
    from PIL import Image

    image = image.convert(mode)
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


class ImageFiles(FileSamples):
    """The images of a folder, decoded on demand to float32 (N, C, H, W) in [0, 1]."""

    def __init__(self, root: Path, listing: Listing, field: str, size: tuple[int, int], mode: str):
        super().__init__(root, listing.keys, listing.digests, field, {"image": {"size": list(size), "mode": mode}})
        self.size, self.mode = size, mode

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.keys), 1 if self.mode == "L" else 3, *self.size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def decode(self, paths: list[Path]) -> np.ndarray:
        from PIL import Image

        out = np.empty((len(paths), *self.shape[1:]), dtype=np.float32)
        for row, path in enumerate(paths):
            with reading(path, "a decodable image", field=self.field, also=(SyntaxError,)), Image.open(path) as image:
                out[row] = decode_image(image, self.size, self.mode)
        return out


def decoded_as(listing: Listing, headers: list[tuple[tuple[int, int], str]], config: DataConfig,
               field: str) -> tuple[tuple[int, int], str]:
    """The (size, mode) every image is decoded to: ``data.image``'s, else the one the files share."""
    chosen = []
    for position, name, setting, hint in ((0, "size", config.image.size, "data.image.size: [H, W] to resize them"),
                                          (1, "mode", config.image.mode, "data.image.mode: L or RGB")):
        if setting is not None:
            chosen.append(tuple(setting) if name == "size" else setting)
            continue
        values = [header[position] for header in headers]
        first = values[0]
        other = next((index for index, value in enumerate(values) if value != first), None)
        if other is not None:
            shown = (lambda v: f"{v[0]}x{v[1]}") if name == "size" else str
            raise KdistillError(f"{field}: images of mixed {name}s: {listing.keys[0]!r} is {shown(first)}, "
                                f"{listing.keys[other]!r} is {shown(values[other])}; set {hint}")
        chosen.append(first)
    return chosen[0], chosen[1]


def labeled_files(root: Path, table: Path) -> tuple[list[Path], list[str]]:
    """The files of a flat image folder and their labels, from the labels CSV ``table``."""
    field = "data.labels"
    with reading(table, "a UTF-8 CSV with a header", field=field, also=(csv.Error,)), open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = [name.strip().lower() for name in rows[0]] if rows else []
    file_column = next((header.index(name) for name in FILE_COLUMNS if name in header), None)
    label_column = next((header.index(name) for name in LABEL_COLUMNS if name in header), None)
    if file_column is None or label_column is None:
        raise KdistillError(f"{field}: {str(table)!r} needs a header with a file column ({', '.join(FILE_COLUMNS)}) "
                            f"and a label column ({', '.join(LABEL_COLUMNS)}); its header is {header}")
    paths, labels, missing = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header) or not row[file_column].strip() or not row[label_column].strip():
            raise KdistillError(f"{field}: {str(table)!r} line {line}: needs a file name and a label, got {row}")
        name = row[file_column].strip()
        path = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not path.is_file():
            missing.append(name)
        paths.append(path)
        labels.append(row[label_column].strip())
    if missing:
        raise KdistillError(f"{field}: {str(table)!r} names {len(missing)} file{'s' if len(missing) > 1 else ''} "
                            f"that {'are' if len(missing) > 1 else 'is'} not in data.path {str(root)!r}: "
                            f"{listed(missing)}")
    return paths, labels


def load_image_folder(config: DataConfig, task: str) -> TaskData:
    """The image folder ``data.path`` (class folders, or flat with ``data.labels``) as keyed splits."""
    root = existing_dir(config.path, "data.path")
    where = f"data.path: {str(root)!r}"
    if config.labels is not None:
        table = Path(config.labels).expanduser()
        paths, labels = labeled_files(root, table)
        where = f"data.labels: {str(table)!r}"
    else:
        paths, labels = class_folders(root, IMAGE_SUFFIXES, "data.path", "images")
    bad = BadSamples(config.on_bad_sample)
    listing, headers = list_files(root, paths, labels, image_header, bad, "data.path", WHAT)
    size, mode = decoded_as(listing, headers, config, "data.path")
    x = ImageFiles(root, listing, "data.path", size, mode)
    meta = {"source": str(root), "bad_samples": bad.meta(), "decode": x.settings}
    return keyed_task_data("image_folder", task, listing, x, config, where, meta)


def transfer_images(path: str, data: TaskData, config: DataConfig) -> tuple[Split, dict]:
    """An unlabeled transfer set from the image folder ``path`` (any depth), decoded like the
    training images; and its bad-sample counts."""
    root, listing, headers, bad = unlabeled_files(path, IMAGE_SUFFIXES, image_header, config, WHAT)
    settings = data.meta["decode"]["image"]
    size, mode = tuple(settings["size"]), settings["mode"]
    if config.image.size is None:
        other = next((index for index, header in enumerate(headers) if header[0] != size), None)
        if other is not None:
            shape = headers[other][0]
            raise KdistillError(f"{TRANSFER_FIELD}: {listing.keys[other]!r} is {shape[0]}x{shape[1]}, the training "
                                f"images are {size[0]}x{size[1]}; set data.image.size: [H, W] to resize every image")
    return transfer_split(root, listing, ImageFiles(root, listing, TRANSFER_FIELD, size, mode), config, bad)
