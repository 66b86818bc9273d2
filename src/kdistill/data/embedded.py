"""scikit-learn's embedded datasets: digits (10 classes) and breast cancer (binary).

Sample ids are the row indices of the original scikit-learn arrays. scikit-learn is imported when
one of them is loaded (it takes seconds), not with :mod:`kdistill.data`.
"""

from __future__ import annotations

import numpy as np

from kdistill.data.partition import split_three
from kdistill.data.splits import Split, TaskData
from kdistill.recipe import DataConfig


def load_digits(config: DataConfig) -> TaskData:
    """8×8 digit images as float32 (N, 64) in [0, 1], int64 labels 0..9, stratified splits."""
    from sklearn.datasets import load_digits as digits

    bunch = digits()
    full = Split((bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64),
                 np.arange(len(bunch.target), dtype=np.int64))
    train, val, test = split_three(full, config, stratify=True)
    return TaskData("digits", "classification", train, val, test, output_dim=10,
                    meta={"classes": [str(name) for name in bunch.target_names],
                          "preprocessing": "8x8 grey levels 0..16 flattened row by row to 64 values, divided by 16"})


def load_breast_cancer(config: DataConfig) -> TaskData:
    """30 features standardized with the training split's mean/std (float32), float32 0/1 labels."""
    from sklearn.datasets import load_breast_cancer as breast_cancer

    bunch = breast_cancer()
    full = Split(bunch.data, bunch.target.astype(np.float32), np.arange(len(bunch.target), dtype=np.int64))
    splits = split_three(full, config, stratify=True)
    mean, std = splits[0].x.mean(axis=0), splits[0].x.std(axis=0)
    train, val, test = (Split(((s.x - mean) / std).astype(np.float32), s.y, s.ids) for s in splits)
    return TaskData("breast_cancer", "binary", train, val, test, output_dim=1,
                    meta={"classes": [str(name) for name in bunch.target_names]})
