"""Black-box teachers: a file of predictions (the "mystery model" of seed 002, known only by its
answers) imported into a soft-target store, so any student can train from it.

Files: ``.npy`` (N, C) in row order; ``.npz`` with ``predictions`` and optionally ``ids``;
``.csv`` / ``.parquet`` with an optional ``id`` column and one column per class. For a keyed
source (an image folder, a text table) a table's ``id`` (or ``key``, ``file``) column holds the
sample keys instead (an image folder's relative file paths, ``shirt/0042.png``; a table's ids),
matched through :func:`kdistill.data.samples.key_ids`. Without ids the
rows must be the recipe's samples in cache order (train, val, test, transfer) and their count must
match exactly; with ids, each id is an integer given once (rows are counted from 0, after a header). ``kind: probs`` rows must be non-negative and sum to 1; they are stored as
logits log p (a zero probability becomes log of float32's smallest normal, ≈ −87.3, so losses stay
finite), which softmax maps back to p at T = 1.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from kdistill.data.arrays import load_numpy, read_csv, read_parquet
from kdistill.data.keyed import listed, unique_key_ids
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError, reading
from kdistill.store.cache import cache_splits, sample_keys
from kdistill.store.manifest import file_sha256
from kdistill.store.writer import StoreWriter

KINDS = ("logits", "probs")
FIELD = "--from-predictions"
KEY_COLUMNS = ("id", "key", "file")


def read_predictions(path: Path, keyed: bool = False) -> tuple[np.ndarray | None, np.ndarray]:
    """(ids or None, predictions as float64 (N, C)) from a prediction file; for ``keyed`` data (a
    source with string keys) a table's key column holds keys, turned into their ids."""
    if not path.is_file():
        raise KdistillError(f"{FIELD}: {str(path)!r} does not exist")
    if path.suffix in (".npy", ".npz"):
        arrays = load_numpy(path, FIELD, ("predictions",) if path.suffix == ".npz" else ())
        values = arrays.get("predictions", arrays.get("x"))
        return arrays.get("ids"), np.asarray(values, dtype=np.float64)
    by_key = _keyed_table(path) if keyed and path.suffix in (".csv", ".parquet", ".pq") else None
    if by_key is not None:
        return by_key
    if path.suffix == ".csv":
        names, table = read_csv(path, FIELD)
    elif path.suffix in (".parquet", ".pq"):
        names, table = read_parquet(path, FIELD)
    else:
        raise KdistillError(f"{FIELD}: {str(path)!r} has an unsupported suffix; use .npy, .npz, .csv or .parquet")
    if names is None or "id" not in names:
        return None, table
    id_column = names.index("id")
    return table[:, id_column], np.delete(table, id_column, axis=1)


def _keyed_table(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids of the keys, predictions) of a CSV or parquet table whose key column (``id``, ``key``
    or ``file``) holds sample keys; None for a table without one."""
    if path.suffix == ".csv":
        with reading(path, "a UTF-8 CSV", field=FIELD, also=(csv.Error,)), open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
        header, body, first, unit = (rows[0] if rows else []), rows[1:], 2, "line"
    else:
        import pandas as pd

        with reading(path, "a parquet table", field=FIELD):
            frame = pd.read_parquet(path)
        header, body, first, unit = list(frame.columns), frame.to_numpy(dtype=object).tolist(), 0, "row"
    header = [str(name).strip().lower() for name in header]
    column = next((header.index(name) for name in KEY_COLUMNS if name in header), None)
    if column is None:
        return None
    keys = [str(row[column]).strip() if len(row) > column else "" for row in body]
    values = []
    for at, row in enumerate(body, start=first):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields, the header has {len(header)}")
            values.append([float(value) for index, value in enumerate(row) if index != column])
        except (TypeError, ValueError) as error:
            raise KdistillError(f"{FIELD}: {str(path)!r} {unit} {at}: not a key and numbers ({error})") from None
    return unique_key_ids(keys, f"{FIELD}: {str(path)!r}"), np.asarray(values, dtype=np.float64).reshape(len(keys), -1)


def as_logits(values: np.ndarray, kind: str, path: Path) -> np.ndarray:
    """Predictions of ``kind`` as float32 logits, checked row by row."""
    if values.ndim != 2 or not len(values):
        raise KdistillError(f"{FIELD}: {str(path)!r} holds shape {values.shape}; expected (samples, classes) with at "
                            "least one sample")
    if not np.isfinite(values).all():
        row = int(np.nonzero(~np.isfinite(values).all(axis=1))[0][0])
        raise KdistillError(f"{FIELD}: {str(path)!r} row {row} is not finite: {values[row][:5]}…")
    if kind == "logits":
        return values.astype(np.float32)
    bad = (values < 0).any(axis=1) | (np.abs(values.sum(axis=1) - 1.0) > 1e-3)
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise KdistillError(f"{FIELD}: kind 'probs' but row {row} of {str(path)!r} sums to {values[row].sum():.4f} "
                            f"(min {values[row].min():.4g}); probabilities must be >= 0 and sum to 1 (or use --kind logits)")
    return np.log(np.maximum(values, np.finfo(np.float32).tiny)).astype(np.float32)


def checked_ids(file_ids: np.ndarray, logits: np.ndarray, path: Path) -> np.ndarray:
    """The file's ids as int64: one per row, integers (12.5 is refused, not truncated), each once."""
    where = f"{FIELD}: {str(path)!r}"
    file_ids = np.asarray(file_ids)
    if file_ids.ndim != 1 or file_ids.dtype.kind not in "iuf":
        raise KdistillError(f"{where}: ids must be one integer per row, got dtype {file_ids.dtype} shape {file_ids.shape}")
    if len(file_ids) != len(logits):
        raise KdistillError(f"{where}: {len(file_ids)} ids for {len(logits)} rows of predictions")
    if file_ids.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(file_ids) | (file_ids != np.round(file_ids)) | (np.abs(file_ids) >= 2.0**63)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise KdistillError(f"{where}: ids must be integers; row {row} has id {file_ids[row]:g} "
                                f"({bad.sum()} such row{'s' if bad.sum() > 1 else ''})")
    file_ids = file_ids.astype(np.int64)
    unique, counts = np.unique(file_ids, return_counts=True)
    if (counts > 1).any():
        repeated = unique[counts > 1]
        rows = np.flatnonzero(file_ids == repeated[0])
        same = "the same" if (logits[rows] == logits[rows[0]]).all() else "different"
        more = f"; {len(repeated) - 1} more ids repeat" if len(repeated) > 1 else ""
        raise KdistillError(f"{where}: id {repeated[0]} is given {len(rows)} times (rows {', '.join(map(str, rows[:5]))}, "
                            f"with {same} predictions){more}; each sample id needs exactly one row")
    return file_ids


def aligned(file_ids: np.ndarray | None, logits: np.ndarray, sample_ids: np.ndarray, path: Path,
            keys: np.ndarray | None = None) -> np.ndarray:
    """The rows of ``logits`` for ``sample_ids`` (whose keys are ``keys``, if keyed), in that order."""
    if file_ids is None:
        if len(logits) != len(sample_ids):
            raise KdistillError(
                f"{FIELD}: {str(path)!r} has {len(logits)} rows and no 'id' column, but the recipe's data has "
                f"{len(sample_ids)} samples (train, val, test, transfer in that order); add an id column or match the count"
            )
        return logits
    file_ids = checked_ids(file_ids, logits, path)
    order = np.argsort(file_ids, kind="stable")
    slots = np.minimum(np.searchsorted(file_ids[order], sample_ids), len(order) - 1)
    absent = file_ids[order][slots] != sample_ids
    if absent.any():
        named = f"sample keys ({listed(keys[absent].tolist())})" if keys is not None else \
            f"sample ids (e.g. {sample_ids[absent][:5].tolist()})"
        raise KdistillError(f"{FIELD}: {str(path)!r} has no prediction for {absent.sum()} of {len(sample_ids)} {named}")
    return logits[order[slots]]


def cache_predictions(data: TaskData, path: Path, kind: str, store: Path, *, dtype: str = "float32",
                      k: int | None = None, shard_size: int = 8192, overwrite: bool = False) -> int:
    """Import a prediction file into ``store`` for every sample of ``data``; returns the sample count."""
    sample_ids = np.concatenate([split.ids for split in cache_splits(data)])
    keys = sample_keys(data)["keys"]
    file_ids, values = read_predictions(path, keyed=keys is not None)
    logits = aligned(file_ids, as_logits(values, kind, path), sample_ids, path, None if keys is None else np.asarray(keys))
    if logits.shape[1] != data.output_dim:
        raise KdistillError(f"{FIELD}: {str(path)!r} has {logits.shape[1]} classes, the data has {data.output_dim}")
    teacher = {"backend": "predictions", "path": str(path), "kind": kind, "sha256": file_sha256(path),
               **data.meta.get("specialist", {})}
    writer = StoreWriter(store, ids=sample_ids, num_classes=data.output_dim, teacher=teacher,
                         dataset_fingerprint=data.fingerprint(), dtype=dtype, k=k, shard_size=shard_size,
                         overwrite=overwrite, **sample_keys(data))
    writer.write(sample_ids[writer.resume_from:], logits[writer.resume_from:])
    writer.close()
    return len(sample_ids)
