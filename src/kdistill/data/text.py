"""Text sources: ``text_folder`` (one sub-folder of UTF-8 ``.txt`` files per class) and
``text_table`` (CSV, JSON Lines or parquet with ``text``, ``label`` and optional ``id`` columns).

The raw text stays raw in the source (``raw(rows)`` of its samples); a batch read gives the
encoding ``data.text`` declares (:mod:`kdistill.data.text_encoding`: hashed n-grams, or a
tokenizer's ids and mask), computed when the batch is read.

Keys: a folder's files by relative POSIX path; a table's rows by its ``id`` column, else by row
number (then a reordered table is another data set). A file that is not UTF-8 is found when the
folder is listed (every file is read once and digested); a table's rows are checked as it is read;
either goes to ``data.on_bad_sample``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from kdistill.data.files import (TRANSFER_FIELD, FileSamples, class_folders, existing_dir, list_files, transfer_split,
                                 unlabeled_files)
from kdistill.data.keyed import BadSamples, Listing, content_digest, keyed_task_data
from kdistill.data.samples import Samples
from kdistill.data.splits import Split, TaskData
from kdistill.data.text_encoding import TextEncoding, text_encoding
from kdistill.errors import KdistillError, reading
from kdistill.recipe import DataConfig, TextConfig

TEXT_SUFFIXES = (".txt",)
TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet", ".pq")
WHAT = "UTF-8 text"


class EncodedText(Samples):
    """Texts encoded on demand by a :class:`TextEncoding`: their shape and dtype are the encoding's."""

    encoding: TextEncoding
    keys: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.keys), *self.encoding.sample_shape)

    @property
    def dtype(self) -> np.dtype:
        return self.encoding.dtype


class TextFiles(FileSamples, EncodedText):
    """The ``.txt`` files of a folder, read and encoded on demand; :meth:`raw` gives the texts."""

    def __init__(self, root: Path, listing: Listing, field: str, config: TextConfig):
        self.encoding = text_encoding(config)
        super().__init__(root, listing.keys, listing.digests, field, self.encoding.settings)

    def raw(self, rows: np.ndarray) -> list[str]:
        """The raw texts at ``rows``."""
        return self._texts([Path(self.root) / key for key in self.keys[rows]])

    def decode(self, paths: list[Path]) -> np.ndarray:
        return self.encoding(self._texts(paths))

    def _texts(self, paths: list[Path]) -> list[str]:
        texts = []
        for path in paths:
            with reading(path, WHAT, field=self.field):
                texts.append(path.read_text(encoding="utf-8"))
        return texts


class TextRows(EncodedText):
    """Texts held in memory (a table's column), encoded on demand; :meth:`raw` gives the texts."""

    def __init__(self, texts: list[str], listing: Listing, config: TextConfig):
        self.texts, self.encoding = np.asarray(texts, dtype=object), text_encoding(config)
        self.keys, self.digests = np.asarray(listing.keys, dtype=str), listing.digests

    def raw(self, rows: np.ndarray) -> list[str]:
        """The raw texts at ``rows``."""
        return self.texts[rows].tolist()

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.encoding(self.raw(rows))

    def fingerprint(self, digest: "hashlib._Hash") -> None:
        digest.update(json.dumps(self.encoding.settings, sort_keys=True).encode())
        digest.update("\n".join((*self.keys, *self.digests)).encode())


def _utf8(data: bytes) -> None:
    data.decode("utf-8")


def load_text_folder(config: DataConfig, task: str, name: str = "text_folder") -> TaskData:
    """``data.path`` with one sub-folder of ``.txt`` files per class, as keyed splits named ``name``."""
    root = existing_dir(config.path, "data.path")
    paths, labels = class_folders(root, TEXT_SUFFIXES, "data.path", "text files")
    bad = BadSamples(config.on_bad_sample)
    listing, _ = list_files(root, paths, labels, _utf8, bad, "data.path", WHAT)
    x = TextFiles(root, listing, "data.path", config.text)
    meta = {"source": str(root), "bad_samples": bad.meta(), "decode": x.settings, **x.encoding.meta}
    return keyed_task_data(name, task, listing, x, config, f"data.path: {str(root)!r}", meta)


def transfer_texts(path: str, data: TaskData, config: DataConfig) -> tuple[Split, dict]:
    """An unlabeled transfer set from the ``.txt`` files under ``path``; and its bad-sample counts."""
    root, listing, _, bad = unlabeled_files(path, TEXT_SUFFIXES, _utf8, config, WHAT)
    return transfer_split(root, listing, TextFiles(root, listing, TRANSFER_FIELD, config.text), config, bad)


def _records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) per row of a CSV / JSON Lines / parquet table; a text that is not UTF-8
    keeps its undecodable bytes as surrogates (found by :func:`load_text_table`)."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            import pandas as pd
        except ImportError:
            raise KdistillError("data.path: reading parquet needs pandas and pyarrow: pip install 'kdistill[files]'") from None
        with reading(path, "a parquet table", field="data.path"):
            frame = pd.read_parquet(path)
        frame.columns = [str(name).lower() for name in frame.columns]
        return [(f"row {index}", record) for index, record in enumerate(frame.to_dict("records"))]
    if suffix == ".csv":
        with reading(path, "a CSV with a header", field="data.path", also=(csv.Error,)), \
                open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            reader = csv.DictReader(handle)
            rows = [(f"line {reader.line_num}", {str(k).strip().lower(): v for k, v in row.items()}) for row in reader]
        return rows
    records = []
    with reading(path, "a JSON Lines file", field="data.path"):
        lines = path.read_bytes().splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            with reading(path, f"JSON Lines (line {number} is not a JSON object)", field="data.path"):
                record = json.loads(line.decode("utf-8", errors="surrogateescape"))
            if not isinstance(record, dict):
                raise KdistillError(f"data.path: {str(path)!r} line {number}: not a JSON object")
            records.append((f"line {number}", {str(k).lower(): v for k, v in record.items()}))
    return records


def load_text_table(config: DataConfig, task: str) -> TaskData:
    """A table of ``text``, ``label`` and optional ``id`` columns as keyed splits."""
    path = Path(config.path).expanduser()
    if not path.is_file():
        raise KdistillError(f"data.path: {str(path)!r} does not exist")
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise KdistillError(f"data.path: {str(path)!r} has an unsupported suffix; use {', '.join(TABLE_SUFFIXES)}")
    records = _records(path)
    where = f"data.path: {str(path)!r}"
    if not records:
        raise KdistillError(f"{where}: holds no rows")
    absent = [column for column in ("text", "label") if column not in records[0][1]]
    if absent:
        raise KdistillError(f"{where}: has no {' and no '.join(repr(c) for c in absent)} column; its columns are "
                            f"{list(records[0][1])} (a text table has text, label and optionally id)")
    bad = BadSamples(config.on_bad_sample)
    keys, labels, texts, digests = [], [], [], []
    for index, (at, record) in enumerate(records):
        if "id" in record and (record["id"] is None or str(record["id"]).strip() == ""):
            raise KdistillError(f"{where} {at}: has no id (the table's id column keys every row)")
        key = str(record["id"]).strip() if "id" in record else str(index)
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or label is None or str(label).strip() == "":
            raise KdistillError(f"{where} {at}: needs a text and a label, got text={text!r}, label={label!r}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            bad.found(f"{where} {at} (key {key!r}): the text is not UTF-8 (an undecodable byte at character {error.start})", key)
            continue
        keys.append(key)
        labels.append(str(label).strip())
        texts.append(text)
        digests.append(content_digest(f"{text}\x1f{labels[-1]}".encode("utf-8")))
    listing = Listing(keys, labels, digests)
    x = TextRows(texts, listing, config.text)
    meta = {"source": str(path), "bad_samples": bad.meta(), "decode": x.encoding.settings, **x.encoding.meta}
    return keyed_task_data("text_table", task, listing, x, config, where, meta)
