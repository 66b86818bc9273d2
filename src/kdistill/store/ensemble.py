"""Ensembles of teachers, combined store by store into one soft-target store (Hinton et al. 2015).

Combinations of the members' logits z_i with weights w_i (normalised to sum 1):

- ``mean_probs`` (default): z = T · log Σ_i w_i softmax(z_i / T). Its softmax at temperature T is
  exactly the weighted mean of the members' tempered probabilities, so a ``kd`` or ``soft_ce``
  loss run at that same T distils the averaged distribution. At another temperature it is the
  tempered version of that mixture, not the mixture of tempered members: cache for the T you train at.
- ``mean_logits``: z = Σ_i w_i z_i (temperature-free).

Members must be complete stores of the same data (dataset fingerprint), sample ids and class count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from kdistill.errors import KdistillError
from kdistill.store.reader import StoreReader
from kdistill.store.writer import StoreWriter

COMBINATIONS = ("mean_probs", "mean_logits")


def combine_logits(members: list[np.ndarray], weights: np.ndarray, combination: str, temperature: float) -> np.ndarray:
    """One (B, C) float32 logit array from the members' (B, C) logits (see the module docstring)."""
    stacked = np.stack(members).astype(np.float64)  # (members, B, C)
    if combination == "mean_logits":
        return np.tensordot(weights, stacked, axes=1).astype(np.float32)
    log_probs = stacked / temperature - logsumexp(stacked / temperature, axis=2, keepdims=True)
    mixed = logsumexp(log_probs, axis=0, b=weights[:, None, None])
    return (temperature * mixed).astype(np.float32)


def ensemble_stores(members: list[Path], store: Path, *, combination: str = "mean_probs",
                    weights: list[float] | None = None, temperature: float = 1.0, dtype: str = "float32",
                    k: int | None = None, shard_size: int = 8192, overwrite: bool = False) -> int:
    """Write the ensemble of the ``members`` stores to ``store``; returns the sample count."""
    if combination not in COMBINATIONS:
        raise KdistillError(f"--combine: {combination!r}; allowed: {', '.join(COMBINATIONS)}")
    if len(members) < 2:
        raise KdistillError(f"--ensemble: give at least two member stores, got {len(members)}")
    if not temperature > 0:
        raise KdistillError(f"--temperature: {temperature} must be > 0")
    weights = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(weights) != len(members) or (weights < 0).any() or not weights.sum() > 0:
        raise KdistillError(f"--weights: {weights.tolist()} — need {len(members)} non-negative weights, not all 0")
    weights = weights / weights.sum()
    readers = [StoreReader(path) for path in members]
    first = readers[0].manifest
    for path, reader in zip(members[1:], readers[1:]):
        for field in ("dataset_fingerprint", "num_classes", "ids_sha256"):
            if getattr(reader.manifest, field) != getattr(first, field):
                raise KdistillError(f"--ensemble: {path} has another {field} ({getattr(reader.manifest, field)}) "
                                    f"than {members[0]} ({getattr(first, field)}); members must cache the same data")
    ids = readers[0].ids
    teacher = {"ensemble": [reader.manifest.teacher for reader in readers],
               "members": [str(path.resolve()) for path in members], "combination": combination,
               "weights": weights.tolist(), "temperature": temperature}
    writer = StoreWriter(store, ids=ids, num_classes=first.num_classes, teacher=teacher,
                         dataset_fingerprint=first.dataset_fingerprint, dtype=dtype, k=k, shard_size=shard_size,
                         overwrite=overwrite)
    for start in range(writer.resume_from, len(ids), shard_size):
        chunk = ids[start:start + shard_size]
        writer.write(chunk, combine_logits([reader.fetch(chunk) for reader in readers], weights, combination, temperature))
    writer.close()
    return len(ids)
