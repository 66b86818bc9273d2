"""The one seeded train/val/test split used by every loader that splits samples itself."""

from __future__ import annotations

import numpy as np

from kdistill.errors import KdistillError
from kdistill.data.splits import Split
from kdistill.recipe import DataConfig


def split_indices(
    n: int, seed: int, val_fraction: float, test_fraction: float = 0.0, strata: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, val, test) row indices of ``n`` samples.

    ``test_fraction`` of the samples go to test and ``val_fraction`` of the rest to val, drawn
    with ``seed``; with ``strata`` (class labels) the fractions are taken within every class.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == value) for value in np.unique(strata)]
    parts: tuple[list, list, list] = ([], [], [])
    for group in groups:
        group = rng.permutation(group)
        n_test = int(len(group) * test_fraction + 0.5)
        n_val = int((len(group) - n_test) * val_fraction + 0.5)
        parts[2].append(group[:n_test])
        parts[1].append(group[n_test : n_test + n_val])
        parts[0].append(group[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(part)).astype(np.int64) for part in parts)
    if not len(train) or not len(val) or (test_fraction and not len(test)):
        raise KdistillError(
            f"data: {n} samples are too few to split with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction} (a split came out empty); give more samples or larger fractions"
        )
    return train, val, test


def split_three(full: Split, config: DataConfig, stratify: bool) -> tuple[Split, Split, Split]:
    """``full`` split into train/val/test by ``config``'s seed and fractions (stratified by y if asked)."""
    index = split_indices(len(full), config.split_seed, config.val_fraction, config.test_fraction,
                          full.y if stratify else None)
    return full.take(index[0]), full.take(index[1]), full.take(index[2])
