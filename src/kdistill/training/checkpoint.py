"""Checkpoints of every backend in one format: ``ROLE.ckpt.safetensors`` (the fit's state as named
arrays: weights, optimizer, random state) and ``ROLE.ckpt.json`` (epoch, history, array names and,
for a checkpoint taken within an epoch, the steps of the next epoch done and their losses). Both
are written to temporary names and renamed, the JSON last, so a checkpoint is whole or absent.
Resuming reads tensors and JSON only: nothing is ever unpickled. A resume that finds a file of
another kind where checkpoints live (a pickle, say) refuses it by name without opening it."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from kdistill.errors import KdistillError, writing
from kdistill.training import History

FORMAT = "kdistill.checkpoint/1"
OWN_SUFFIXES = (".safetensors", ".json", ".keras")  # checkpoints, and models saved beside them (no pickles)


def files(stem: Path) -> tuple[Path, Path]:
    return stem.with_name(stem.name + ".ckpt.safetensors"), stem.with_name(stem.name + ".ckpt.json")


@dataclasses.dataclass(frozen=True)
class Within:
    """How far a checkpoint taken within an epoch got: its first ``step`` steps done, their loss
    rows ``[total, *parts]`` and the training seconds they took."""

    step: int
    losses: list[list[float]]
    seconds: float


def save(stem: Path, arrays: dict[str, np.ndarray], epoch: int, history: History, within: Within | None = None) -> None:
    """Write the state after ``epoch`` (0-based; -1 before the first) and the history so far, and
    ``within`` the next epoch how far it got."""
    tensors, sidecar = files(stem)
    with writing(tensors, "this file"):
        tensors.parent.mkdir(parents=True, exist_ok=True)
        tmp = tensors.with_name(tensors.name + ".tmp")
        save_file({name: np.asarray(array, order="C") for name, array in arrays.items()}, str(tmp),
                  metadata={"format": FORMAT})
        os.replace(tmp, tensors)
    meta = {"format": FORMAT, "epoch": epoch, "history": dataclasses.asdict(history), "arrays": sorted(arrays)}
    if within is not None:
        meta["within"] = dataclasses.asdict(within)
    with writing(sidecar, "this file"):
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, sidecar)


def exists(stem: Path) -> bool:
    return all(path.exists() for path in files(stem))


def refuse_foreign(directory: Path) -> None:
    """A directory of checkpoints holds kdistill's own files only; anything else (a pickled
    ``.pt``, say) is refused by name, unopened."""
    for path in sorted(directory.glob("*")) if directory.is_dir() else ():
        if path.is_file() and path.suffix not in OWN_SUFFIXES and not path.name.endswith(".tmp"):
            raise KdistillError(f"--resume: {path} is not a kdistill checkpoint (those are ROLE.ckpt.safetensors + "
                                "ROLE.ckpt.json; kdistill never unpickles one): remove it, or start afresh in another --out")


def load(stem: Path, role: str) -> tuple[dict[str, np.ndarray], int, History]:
    """The arrays, the last finished epoch and the history of a checkpoint (:func:`within`: how
    far the next epoch got)."""
    tensors, sidecar = files(stem)
    try:
        meta = json.loads(sidecar.read_text())
        arrays = load_file(str(tensors))
    except (OSError, ValueError, SafetensorError) as error:
        raise KdistillError(f"--resume: {role} checkpoint {tensors} is damaged or not a kdistill checkpoint "
                            f"({error}); start afresh in another --out") from None
    try:
        if meta.get("format") != FORMAT or sorted(arrays) != meta.get("arrays"):
            raise ValueError("format or array names differ")
        return arrays, int(meta["epoch"]), History(**meta["history"])
    except (AttributeError, KeyError, TypeError, ValueError):
        raise KdistillError(f"--resume: {sidecar} is not a {FORMAT} checkpoint of {tensors}; "
                            "start afresh in another --out") from None


def check_fits(arrays: dict[str, np.ndarray], expected: dict[str, np.ndarray], role: str, stem: Path) -> None:
    """A checkpoint must hold every array this fit has (``expected``), each of the same shape and
    dtype; it may hold more (state an optimizer makes at its first step)."""
    wrong = sorted(name for name in expected if name not in arrays or arrays[name].shape != expected[name].shape
                   or arrays[name].dtype != expected[name].dtype)
    if wrong:
        raise KdistillError(f"--resume: {files(stem)[0]} does not fit this recipe's {role} model "
                            f"(resume with the recipe of the interrupted run, or start afresh in another --out); "
                            f"differing arrays: {', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}")


def within(stem: Path) -> Within | None:
    """How far into the epoch after its last finished one a checkpoint (read by :func:`load`
    first) got; None for one taken at an epoch's end."""
    saved = json.loads(files(stem)[1].read_text()).get("within")
    try:
        return None if saved is None else Within(int(saved["step"]), saved["losses"], float(saved["seconds"]))
    except (KeyError, TypeError, ValueError):
        raise KdistillError(f"--resume: {files(stem)[1]} is not a {FORMAT} checkpoint (its 'within' is {saved!r}); "
                            "start afresh in another --out") from None
