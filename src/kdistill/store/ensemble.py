"""Ensembles of teachers, combined store by store into one soft-target store (Hinton et al. 2015).

Combinations of the members' logits z_i with weights w_i (normalised to sum 1):

- ``mean_probs`` (default): z = T · log Σ_i w_i softmax(z_i / T). Its softmax at temperature T is
  exactly the weighted mean of the members' tempered probabilities, so a ``kd`` or ``soft_ce``
  loss run at that same T distils the averaged distribution. At another temperature it is the
  tempered version of that mixture, not the mixture of tempered members: cache for the T you train at.
- ``mean_logits``: z = Σ_i w_i z_i (temperature-free).
- ``specialists``: the first member is a generalist over all classes, the others specialists
  over subsets of them plus a dustbin (stores cached from a recipe with ``data.classes``), merged
  as in Hinton et al. 2015 §5 (:mod:`kdistill.store.specialists`; weights do not apply).

Members must be complete stores of the same data (dataset fingerprint), sample ids and class count;
a specialist's store carries the fingerprint of the data with all classes, which must be the
generalist's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import logsumexp

from kdistill.errors import KdistillError
from kdistill.store.reader import StoreReader
from kdistill.store.specialists import merge_specialists
from kdistill.store.writer import StoreWriter

COMBINATIONS = ("mean_probs", "mean_logits", "specialists")


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
                    k: int | None = None, shard_size: int = 8192, top_n: int = 1, overwrite: bool = False) -> int:
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
    if any(store.resolve() == member.resolve() for member in members):
        raise KdistillError(f"--store: {store} is also a member of --ensemble; write the ensemble to another directory")
    readers = [StoreReader(path) for path in members]
    _check_members(members, readers, combination)
    first = readers[0].manifest
    ids = readers[0].ids
    teacher = {"ensemble": [reader.manifest.teacher for reader in readers],
               "members": [str(path.resolve()) for path in members], "combination": combination,
               "weights": weights.tolist(), "temperature": temperature}
    if combination == "specialists":
        teacher.update(weights=None, classes=[reader.manifest.teacher["classes"] for reader in readers[1:]], top_n=top_n)
    writer = StoreWriter(store, ids=ids, num_classes=first.num_classes, teacher=teacher,
                         dataset_fingerprint=first.dataset_fingerprint, dtype=dtype, k=k, shard_size=shard_size,
                         overwrite=overwrite, keys=first.keys, digests=first.digests)  # members share the sample ids
    for start in range(writer.resume_from, len(ids), shard_size):
        chunk = ids[start:start + shard_size]
        logits = [reader.fetch(chunk) for reader in readers]
        if combination == "specialists":
            writer.write(chunk, merge_specialists(logits[0], logits[1:], teacher["classes"], temperature=temperature,
                                                  top_n=top_n))
        else:
            writer.write(chunk, combine_logits(logits, weights, combination, temperature))
    writer.close()
    return len(ids)


def _check_members(members: list[Path], readers: list[StoreReader], combination: str) -> None:
    """Same sample ids everywhere; same data and class count, or for ``specialists`` a generalist
    first and specialists of the generalist's data after it."""
    first = readers[0].manifest
    for path, reader in zip(members[1:], readers[1:]):
        manifest = reader.manifest
        expected = {"ids_sha256": first.ids_sha256}
        if combination != "specialists":
            expected.update(dataset_fingerprint=first.dataset_fingerprint, num_classes=first.num_classes)
            seen = {field: getattr(manifest, field) for field in expected}
        else:
            if "classes" not in manifest.teacher:
                raise KdistillError(f"--ensemble: {path} is not a specialist's store (cache it from a recipe with "
                                    f"data.classes); with --combine specialists the first store is the generalist")
            expected.update(all_classes_fingerprint=first.dataset_fingerprint,
                            num_classes=len(manifest.teacher["classes"]) + 1)
            seen = {"ids_sha256": manifest.ids_sha256, "num_classes": manifest.num_classes,
                    "all_classes_fingerprint": manifest.teacher.get("all_classes_fingerprint")}
        for field, value in expected.items():
            if seen[field] != value:
                raise KdistillError(f"--ensemble: {path} has {field} {seen[field]}, expected {value} from {members[0]}; "
                                    f"members must cache the same data")
