"""User arrays: ``.npz`` (keys ``x``, ``y``, optional ``ids``), CSV or parquet.

Table conventions (CSV with or without a header, parquet): the target is the column named
``label``, ``target`` or ``y`` if there is one, else the last column; a column named ``id`` gives
the sample ids (else the row index); every other column is an input feature.

Targets: classification labels must be the consecutive integers 0..K-1, each in at least one row
and, once val and test are split off, in at least one training row, with K >= 2 classes; the class
count K (the model's outputs) is read from them, so a stray label is refused, never taken for
extra classes. Binary targets must be 0 or 1, both present. Inputs and targets must be finite.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from kdistill.data.partition import split_three
from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError, reading
from kdistill.recipe import DataConfig

TARGET_NAMES = ("label", "target", "y")


def read_csv(path: Path, field: str | None = None) -> tuple[list[str] | None, np.ndarray]:
    """A numeric CSV as float64 (N, C), with its lower-cased column names if the first line is a header."""
    with reading(path, "a numeric CSV", field=field):
        with open(path) as handle:
            names = [token.strip().strip('"').lower() for token in handle.readline().split(",")]
        header = not all(_is_number(name) for name in names)
        with warnings.catch_warnings():  # an empty table is reported below
            warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
            table = np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2, dtype=np.float64)
    if not len(table):
        raise KdistillError(f"{f'{field}: ' if field else ''}{path}: no data rows")
    return (names if header else None), table


def read_parquet(path: Path, field: str) -> tuple[list[str], np.ndarray]:
    """A numeric parquet table as float64 (N, C) with its lower-cased column names."""
    import pandas as pd

    with reading(path, "a parquet table", field=field):
        frame = pd.read_parquet(path)
    try:
        table = frame.to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise KdistillError(f"{field}: {path}: has non-numeric columns ({error})") from None
    return [str(name).lower() for name in frame.columns], table


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_inputs(path: Path, field: str) -> np.ndarray:
    """Unlabeled inputs from ``.npy``, ``.npz`` (key ``x``) or CSV (every column; a header is skipped)."""
    if not path.is_file():
        raise KdistillError(f"{field}: {str(path)!r} does not exist")
    if path.suffix == ".csv":
        return read_csv(path, field)[1]
    if path.suffix not in (".npy", ".npz"):
        raise KdistillError(f"{field}: {str(path)!r} has an unsupported suffix; use .npy, .npz (key 'x') or .csv")
    x = load_numpy(path, field, ("x",))["x"]
    check_rows(x, "inputs", f"{field}: {str(path)!r}")
    return x


def check_rows(array: np.ndarray, what: str, where: str) -> None:
    """``array`` must hold at least one row (sample) of finite numbers (bool, integer or float)."""
    if array.ndim == 0 or not len(array):
        raise KdistillError(f"{where}: holds no samples ({what} shaped {array.shape}); give at least one row")
    if array.dtype.kind not in "biuf":
        raise KdistillError(f"{where}: {what} must be numbers, got dtype {array.dtype}")
    bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1) if array.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise KdistillError(f"{where}: {what} hold NaN or infinite values in {_rows(bad.sum())} of {len(array)} "
                            f"(the first is row {np.flatnonzero(bad)[0]}); every value must be finite")


def load_numpy(path: Path, field: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of a ``.npy`` (as ``x``) or the named keys of a ``.npz`` (``ids`` when present)."""
    what = f"a numpy .npz file with keys {', '.join(keys)}" if path.suffix == ".npz" else "a numpy .npy array"
    with reading(path, what, field=field):
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"x": loaded}
        with loaded:
            missing = [key for key in keys if key not in loaded.files]
            if missing:
                raise KdistillError(f"{field}: {str(path)!r} lacks key(s) {missing}; it has {loaded.files}")
            return {key: loaded[key] for key in (*keys, "ids") if key in loaded.files}


def _from_table(names: list[str] | None, table: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    columns = table.shape[1]
    names = names or [""] * columns
    target = next((names.index(name) for name in TARGET_NAMES if name in names), columns - 1)
    id_column = names.index("id") if "id" in names else None
    features = [c for c in range(columns) if c not in (target, id_column)]
    if not features:
        raise KdistillError(f"data.path: {str(path)!r} has no input columns besides the target/id")
    arrays = {"x": table[:, features], "y": table[:, target]}
    if id_column is not None:
        arrays["ids"] = table[:, id_column]
    return arrays


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise KdistillError(f"data.path: {str(path)!r} does not exist")
    if path.suffix == ".npz":
        return load_numpy(path, "data.path", ("x", "y"))
    if path.suffix == ".csv":
        return _from_table(*read_csv(path, "data.path"), path)
    if path.suffix in (".parquet", ".pq"):
        return _from_table(*read_parquet(path, "data.path"), path)
    raise KdistillError(f"data.path: {str(path)!r} has an unsupported suffix; use .npz, .csv or .parquet")


def _targets(y: np.ndarray, x: np.ndarray, task: str, path: Path) -> tuple[np.ndarray, int]:
    """Targets in the task's dtype and shape, and the model's output dimension."""
    where = f"data.path: {str(path)!r}"
    if task == "regression":
        y = y.astype(np.float32).reshape(len(y), -1)
        return y, y.shape[1]
    if task == "ranking":
        if y.ndim != 2 or x.ndim != 2 or y.shape[1] != x.shape[1] - 1:
            raise KdistillError(f"{where}: ranking needs x (N, 1 + L) [user, items] and y (N, L); got {x.shape} and {y.shape}")
        return y.astype(np.float32), y.shape[1]
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise KdistillError(f"{where}: {task} targets must be one value per sample; got shape {y.shape}")
    if task == "binary":
        bad = np.setdiff1d(y, [0, 1])
        if len(bad):
            raise KdistillError(f"{where}: binary targets must be 0 or 1; found {bad[:5].tolist()} "
                                f"in {_rows(np.isin(y, bad).sum())}")
        if len(np.unique(y)) < 2:
            raise KdistillError(f"{where}: binary targets need both classes 0 and 1; all {len(y)} rows are {y[0]:g}")
        return y.astype(np.float32), 1
    outside = (y < 0) | (y != np.round(y))
    if outside.any():
        raise KdistillError(f"{where}: classification labels must be integers 0..C-1; found "
                            f"{np.unique(y[outside])[:5].tolist()} in {_rows(outside.sum())}")
    y = y.astype(np.int64)
    return y, _class_count(y, where)


def _class_count(y: np.ndarray, where: str) -> int:
    """The class count K of classification labels ``y``, which must be the consecutive integers
    0..K-1, each in at least one row, with K >= 2: a stray label (a 12 among 0..9) is refused, not
    taken for a 13-class problem with two classes nobody has seen."""
    present, counts = np.unique(y, return_counts=True)
    if len(present) < 2:
        raise KdistillError(f"{where}: classification needs at least 2 classes; all {len(y)} rows have label {present[0]}")
    absent = np.setdiff1d(np.arange(present[-1]), present)
    if len(absent):
        stray = present > absent[0]
        labels, many = present[stray], len(absent) > 1
        raise KdistillError(
            f"{where}: classification labels must be the consecutive integers 0..K-1, each in at least one row; "
            f"label{'s' if len(labels) > 1 else ''} {_listed(labels)} appear{'' if len(labels) > 1 else 's'} in "
            f"{_rows(counts[stray].sum())} but class{'es' if many else ''} {_listed(absent)} {'are' if many else 'is'} "
            f"absent; fix or drop those rows, or renumber the classes 0..{len(present) - 1}"
        )
    return len(present)


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _listed(values: np.ndarray, most: int = 5) -> str:
    """Up to ``most`` values, comma-separated, then how many more."""
    shown = ", ".join(str(value) for value in values[:most])
    return shown if len(values) <= most else f"{shown}, … ({len(values) - most} more)"


def _check_training_classes(train: Split, output_dim: int, where: str) -> None:
    """Every class of the data needs a training sample: the split must not leave one in val/test only."""
    unseen = np.setdiff1d(np.arange(output_dim), train.y)
    if len(unseen):
        raise KdistillError(
            f"{where}: class{'es' if len(unseen) > 1 else ''} {_listed(unseen)} ha{'ve' if len(unseen) > 1 else 's'} "
            "no training sample: its few rows all went to val and test; add rows, or lower data.val_fraction / "
            "data.test_fraction"
        )


def load_arrays(config: DataConfig, task: str) -> TaskData:
    """``data.path`` read, typed for ``task`` and split like the embedded datasets (stratified
    for classification and binary)."""
    path = Path(config.path).expanduser()
    arrays = _read(path)
    x, y = arrays["x"], arrays["y"]
    where = f"data.path: {str(path)!r}"
    for name, what in (("x", "inputs (x)"), ("y", "targets (y)"), ("ids", "ids")):
        if name in arrays:
            check_rows(arrays[name], what, where)
    if len(y) != len(x) or ("ids" in arrays and len(arrays["ids"]) != len(x)):
        raise KdistillError(f"{where}: x, y and ids differ in length")
    y, output_dim = _targets(y, x, task, path)
    ids = arrays.get("ids", np.arange(len(x)))
    if (ids != np.round(ids)).any() or len(np.unique(ids)) != len(ids):
        raise KdistillError(f"{where}: ids must be distinct integers")
    x = x.astype(np.int64 if task == "ranking" else np.float32)
    full = Split(x, y, ids.astype(np.int64))
    train, val, test = split_three(full, config, stratify=task in ("classification", "binary"))
    if task == "classification":
        _check_training_classes(train, output_dim, where)
    return TaskData("arrays", task, train, val, test, output_dim=output_dim, meta={"path": str(path)})
