"""Folders of sample files: listing them by class folder and keying them by relative path.

A sample's key is its path relative to the folder given, in POSIX form (``shirt/0042.png``), so
it is the same on every machine and whatever order the file system lists entries in. Hidden
entries (names starting with ``.``) are left out; files of other kinds than the source reads
(a README beside the images) are ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kdistill.data.keyed import BadSamples, Listing, content_digest, in_memory, listed, sorted_split
from kdistill.data.samples import Samples
from kdistill.data.splits import Split
from kdistill.errors import KdistillError, reading
from kdistill.recipe import DataConfig

TRANSFER_FIELD = "data.transfer.path"
LISTING_THREADS = min(8, os.cpu_count() or 1)
"""Threads that read and check a folder's files when it is listed."""
Check = Callable[[bytes], object]
"""Checks a file's bytes at listing time; raises ValueError (or the format's own error) if bad."""


def files_under(root: Path, suffixes: Iterable[str]) -> list[Path]:
    """The files below ``root`` (any depth) whose suffix is one of ``suffixes``, in key order
    (``os.walk``: one directory read per folder, no per-file system call)."""
    wanted = tuple(suffix.lower() for suffix in suffixes)
    found = []
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [os.path.join(folder, name) for name in files
                  if not name.startswith(".") and name.lower().endswith(wanted)]
    start = len(os.path.join(root, ""))
    return [Path(path) for path in sorted(found, key=lambda path: path[start:].replace(os.sep, "/"))]


def key_of(path: Path, root: Path) -> str:
    """The key of the file ``path`` in the folder ``root``: its relative POSIX path."""
    return path.relative_to(root).as_posix()


def existing_dir(path: str, field: str) -> Path:
    """``path`` as a directory, or an error naming ``field``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise KdistillError(f"{field}: {str(root)!r} is not a directory" +
                            ("" if root.exists() else " (it does not exist)"))
    return root


def class_folders(root: Path, suffixes: Iterable[str], field: str, what: str) -> tuple[list[Path], list[str]]:
    """The files of a folder holding one sub-folder per class, and each file's class (its folder's
    name). A class folder without such files, or such files outside class folders, is an error."""
    suffixes = tuple(suffixes)
    folders = sorted(entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    loose = sorted(entry.name for entry in os.scandir(root) if entry.is_file() and not entry.name.startswith(".")
                   and entry.name.lower().endswith(tuple(suffix.lower() for suffix in suffixes)))
    if loose:
        raise KdistillError(f"{field}: {str(root)!r} holds {what} outside class folders ({listed(loose)}); put every "
                            "file in the sub-folder of its class" + (", or give data.labels (a labels CSV)"
                                                                     if field == "data.path" and what == "images" else ""))
    if not folders:
        raise KdistillError(f"{field}: {str(root)!r} has no class folders; give a folder with one sub-folder of "
                            f"{what} per class")
    paths, labels = [], []
    for folder in folders:
        found = files_under(folder, suffixes)
        if not found:
            raise KdistillError(f"{field}: class folder {str(folder)!r} holds no {what} ({', '.join(suffixes[:8])}"
                                f"{', …' if len(suffixes) > 8 else ''}); remove it or add files")
        paths += found
        labels += [folder.name] * len(found)
    return paths, labels


def list_files(root: Path, paths: list[Path], labels: list[str] | None, check: Check, bad: BadSamples,
               field: str, what: str) -> tuple[Listing, list]:
    """Read every file once: its key, its label and the digest of its bytes, and what ``check``
    returns for its bytes; a file ``check`` refuses goes to the bad-sample policy, in listing order.
    Files are read and checked by :data:`LISTING_THREADS` threads."""
    def examine(path: Path) -> tuple[str, object, Exception | None]:
        with reading(path, "a readable file", field=field):
            data = path.read_bytes()
        try:
            return content_digest(data), check(data), None
        except Exception as error:  # noqa: BLE001 - a decoder's errors are many; each is this file's fault
            return "", None, error

    keys, kept, digests, found = [], [], [], []
    with ThreadPoolExecutor(LISTING_THREADS) as pool:  # file reads and Pillow's C parts overlap
        for index, (path, (digest, seen, error)) in enumerate(zip(paths, pool.map(examine, paths))):
            key = key_of(path, root)
            if error is not None:
                bad.found(f"{field}: {str(path)!r} is not {what} ({type(error).__name__}: {error})", key)
                continue
            keys.append(key)
            digests.append(digest)
            found.append(seen)
            if labels is not None:
                kept.append(labels[index])
    lost = sorted(set(labels) - set(kept)) if labels is not None else []
    if lost:
        raise KdistillError(f"{field}: every file of class {lost[0]!r} was skipped as unreadable "
                            f"(data.on_bad_sample: skip, {len(bad.skipped)} files skipped: {listed(bad.skipped)}); "
                            "a class needs samples")
    return Listing(keys, kept if labels is not None else None, digests), found


def unlabeled_files(path: str, suffixes: tuple[str, ...], check: Check, config: DataConfig,
                    what: str) -> tuple[Path, Listing, list, BadSamples]:
    """The folder of a transfer set (``data.transfer.path``): its root, the listing of its files
    (any depth), what ``check`` found in each, and the bad files met."""
    root = existing_dir(path, TRANSFER_FIELD)
    bad = BadSamples(config.on_bad_sample)
    listing, found = list_files(root, files_under(root, suffixes), None, check, bad, TRANSFER_FIELD, what)
    if not listing.keys:
        raise KdistillError(f"{TRANSFER_FIELD}: {str(root)!r} holds no files of {what} ({', '.join(suffixes)})")
    return root, listing, found, bad


def transfer_split(root: Path, listing: Listing, x: Samples, config: DataConfig, bad: BadSamples) -> tuple[Split, dict]:
    """The unlabeled transfer split of a folder's files ``x``, and its bad-sample counts."""
    split = sorted_split(listing, x, None, f"{TRANSFER_FIELD}: {str(root)!r}")
    return (in_memory(split) if config.cache_in_memory else split), bad.meta()


class FileSamples(Samples):
    """Samples that are files of a folder, decoded on demand: only their keys (relative paths) and
    content digests are held in memory. Subclasses decode a batch of files (:meth:`decode`)."""

    def __init__(self, root: Path, keys: list[str], digests: list[str], field: str, settings: dict):
        self.root, self.field, self.settings = str(root), field, settings
        self.keys, self.digests = np.asarray(keys, dtype=str), np.asarray(digests, dtype=str)

    @abstractmethod
    def decode(self, paths: list[Path]) -> np.ndarray:
        """The decoded files at ``paths``, one row each."""

    def read(self, rows: np.ndarray) -> np.ndarray:
        root = Path(self.root)
        return self.decode([root / key for key in self.keys[rows]])

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        digest.update(json.dumps(self.settings, sort_keys=True).encode())
        digest.update("\n".join((*self.keys, *self.digests)).encode())
