"""User arrays: ``.npz`` (keys ``x``, ``y``, optional ``ids``), CSV or parquet.

Table conventions (CSV with or without a header, parquet): the target is the column named
``label``, ``target`` or ``y`` if there is one, else the last column; a column named ``id`` gives
the sample ids (else the row index); every other column is an input feature.
"""

from __future__ import annotations

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
    return load_numpy(path, field, ("x",))["x"]


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
            raise KdistillError(f"{where}: binary targets must be 0 or 1; found {bad[:5].tolist()}")
        return y.astype(np.float32), 1
    bad = np.unique(y[(y < 0) | (y != np.round(y))])
    if len(bad):
        raise KdistillError(f"{where}: classification labels must be integers 0..C-1; found {bad[:5].tolist()}")
    y = y.astype(np.int64)
    return y, int(y.max()) + 1


def load_arrays(config: DataConfig, task: str) -> TaskData:
    """``data.path`` read, typed for ``task`` and split like the embedded datasets (stratified
    for classification and binary)."""
    path = Path(config.path).expanduser()
    arrays = _read(path)
    x, y = arrays["x"], arrays["y"]
    if len(y) != len(x) or ("ids" in arrays and len(arrays["ids"]) != len(x)):
        raise KdistillError(f"data.path: {str(path)!r}: x, y and ids differ in length")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise KdistillError(f"data.path: {str(path)!r} contains NaN or infinite values")
    y, output_dim = _targets(y, x, task, path)
    ids = arrays.get("ids", np.arange(len(x)))
    if (ids != np.round(ids)).any() or len(np.unique(ids)) != len(ids):
        raise KdistillError(f"data.path: {str(path)!r}: ids must be distinct integers")
    x = x.astype(np.int64 if task == "ranking" else np.float32)
    full = Split(x, y, ids.astype(np.int64))
    train, val, test = split_three(full, config, stratify=task in ("classification", "binary"))
    return TaskData("arrays", task, train, val, test, output_dim=output_dim, meta={"path": str(path)})
