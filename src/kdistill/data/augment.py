"""Seeded augmentation views, framework-neutral (numpy).

A *view* of a sample is identified by ``(sample id, view id)``: view 0 is the sample itself, and
view v ≥ 1 is the augmentation drawn from a hash of ``(augment.seed, id, v)`` — the same pixels
every time, in every framework. Online training draws a fresh view per sample and epoch; offline
training from a store cached with K views (ids 1..K) replays one of those exact views, so the
cached teacher output always belongs to the input the student sees.
"""

from __future__ import annotations

import numpy as np

from kdistill.errors import KdistillError
from kdistill.recipe import AugmentConfig

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(*parts: np.ndarray | int) -> np.ndarray:
    """splitmix64 of the parts combined: well-spread uint64 per element, the same on every machine."""
    state = np.zeros(np.broadcast(*[np.asarray(part) for part in parts]).shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for part in parts:
            state = state ^ np.asarray(part).astype(np.uint64)
            state = state + np.uint64(0x9E3779B97F4A7C15)
            state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            state = state ^ (state >> np.uint64(31))
    return state & _MASK


def view_ids(seed: int, epoch: int, ids: np.ndarray, views: int | None) -> np.ndarray:
    """The view each sample gets in ``epoch``: one of 1..``views`` (a cached store's views), or with
    ``views=None`` (online) a fresh view id per epoch."""
    drawn = _mix(seed, epoch, ids)
    if views is None:
        return (drawn >> np.uint64(2)).astype(np.int64) + 1  # 1 .. 2^62
    return (drawn % np.uint64(views)).astype(np.int64) + 1


def check_images(shape: tuple[int, ...], config: AugmentConfig) -> None:
    """Augmentation needs image inputs (channels, height, width) at least as large as the shift."""
    if len(shape) != 3:
        raise KdistillError(f"data.augment: shift and flip need image inputs (channels, height, width), "
                            f"the data has inputs shaped {shape}")
    if config.shift >= min(shape[1:]):
        raise KdistillError(f"data.augment.shift: {config.shift} pixels is not smaller than the image {shape[1:]}")


def augment(x: np.ndarray, ids: np.ndarray, views: np.ndarray, config: AugmentConfig) -> np.ndarray:
    """The views ``views`` of the samples ``ids`` whose inputs are ``x`` (N, C, H, W): translated by
    (dy, dx) ∈ [−shift, shift]² with zero fill and flipped left–right when drawn; view 0 unchanged."""
    check_images(x.shape[1:], config)
    n, _, height, width = x.shape
    draw = _mix(config.seed, ids, views)
    span = np.uint64(2 * config.shift + 1)
    dy = (draw % span).astype(np.int64) - config.shift
    dx = ((draw >> np.uint64(16)) % span).astype(np.int64) - config.shift
    flip = config.flip & ((draw >> np.uint64(32)) & np.uint64(1)).astype(bool)
    identity = np.asarray(views) == 0
    dy[identity], dx[identity], flip[identity] = 0, 0, False
    pad = config.shift
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = pad + dy[:, None] + np.arange(height)[None, :]  # (N, H)
    cols = np.arange(width)[None, :]
    cols = np.where(flip[:, None], width - 1 - cols, cols) + pad + dx[:, None]  # (N, W)
    return padded[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
