"""Ranking data as per-user candidate lists: a synthetic latent-factor generator and a MovieLens reader.

Both sources share one list builder. A split's row is ``x = [user, item_1 .. item_L]`` (int64) and
``y`` the L relevances (float32): the user's interactions of that split plus negatives drawn
uniformly from the items the user never interacted with (in any split), shuffled. Each user gives
``TRAIN_LISTS`` train lists (fresh negatives, and a fresh subset of positives when a user has more
than L/2) and one val and one test list. List id = ``user * 100 + slot`` (train 0..3, val 4, test 5).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kdistill.data.splits import Split, TaskData
from kdistill.errors import KdistillError, reading
from kdistill.recipe import DataConfig, RankingConfig

TEMPERATURE = 0.5  # sharpness of the synthetic users' choices: softmax(affinity / TEMPERATURE)
TRAIN_LISTS = 4
SLOTS = 100


def latent_factor_model(ranking: RankingConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic generator: true affinity (n_users, n_items) and each user's positives (n_users, P).

    U, V ~ N(0, 1/sqrt(dim)) (variance), so U·Vᵀ has unit variance; plus an item popularity bias
    ~ N(0, 0.5²). Positives are drawn without replacement with probability softmax(affinity / 0.5)
    (Gumbel top-k).
    """
    rng = np.random.default_rng(seed)
    scale = ranking.dim**-0.25
    users = rng.normal(0.0, scale, (ranking.n_users, ranking.dim))
    items = rng.normal(0.0, scale, (ranking.n_items, ranking.dim))
    affinity = users @ items.T + rng.normal(0.0, 0.5, ranking.n_items)
    keys = affinity / TEMPERATURE + rng.gumbel(size=affinity.shape)
    return affinity, np.argsort(-keys, axis=1)[:, : ranking.positives]


def split_parts(n: int, val_fraction: float, test_fraction: float) -> np.ndarray | None:
    """Part (0 train, 1 val, 2 test) of each of a user's ``n`` ordered interactions: the last
    ``test_fraction`` go to test, the last ``val_fraction`` of the rest to val, at least one each;
    None when ``n`` is too few for all three parts."""
    n_test = max(1, int(n * test_fraction + 0.5))
    n_val = max(1, int((n - n_test) * val_fraction + 0.5))
    n_train = n - n_test - n_val
    return np.repeat([0, 1, 2], [n_train, n_val, n_test]) if n_train >= 1 else None


def build_lists(
    rng: np.random.Generator,
    histories: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
    n_items: int,
    length: int,
) -> tuple[Split, Split, Split]:
    """Train, val and test candidate lists from ``(user, items, relevance, part)`` histories
    (one entry per interacted item; every part must occur)."""
    rows: tuple[list, list, list] = ([], [], [])
    max_positives = length // 2
    for user, items, relevance, part in histories:
        pool = np.setdiff1d(np.arange(n_items), items)
        for split, copies in enumerate((TRAIN_LISTS, 1, 1)):
            mine = np.flatnonzero(part == split)
            for copy in range(copies):
                chosen = mine if len(mine) <= max_positives else rng.choice(mine, max_positives, replace=False)
                n_negative = length - len(chosen)
                if n_negative > len(pool):
                    raise KdistillError(
                        f"data.ranking.list_length: {length} needs {n_negative} negatives for user {user}, who has only "
                        f"{len(pool)} items they never interacted with; lower list_length"
                    )
                candidates = np.concatenate([items[chosen], rng.choice(pool, n_negative, replace=False)])
                gains = np.concatenate([relevance[chosen], np.zeros(n_negative)])
                order = rng.permutation(length)
                slot = copy + (0, TRAIN_LISTS, TRAIN_LISTS + 1)[split]
                rows[split].append((np.concatenate([[user], candidates[order]]), gains[order], user * SLOTS + slot))
    return tuple(
        Split(np.array([r[0] for r in part], np.int64).reshape(-1, 1 + length),
              np.array([r[1] for r in part], np.float32).reshape(-1, length),
              np.array([r[2] for r in part], np.int64))
        for part in rows
    )


def load_synthetic(config: DataConfig) -> TaskData:
    """Implicit feedback from ``latent_factor_model`` seeded with ``data.split_seed``: each user's
    positives (relevance 1) in random order are split by ``split_parts``."""
    ranking = config.ranking
    parts = split_parts(ranking.positives, config.val_fraction, config.test_fraction)
    if parts is None:
        raise KdistillError(
            f"data.ranking.positives: {ranking.positives} is too few to give every user a train, val and test "
            f"positive with these fractions; use at least 3"
        )
    _, positives = latent_factor_model(ranking, config.split_seed)
    rng = np.random.default_rng((config.split_seed, 1))
    ones = np.ones(ranking.positives)
    histories = ((user, rng.permutation(items), ones, parts) for user, items in enumerate(positives))
    train, val, test = build_lists(rng, histories, ranking.n_items, ranking.list_length)
    meta = {"n_users": ranking.n_users, "n_items": ranking.n_items, "list_length": ranking.list_length,
            "positives": ranking.positives, "dim": ranking.dim, "temperature": TEMPERATURE}
    return TaskData("synthetic_ranking", "ranking", train, val, test, output_dim=ranking.list_length, meta=meta)


def read_ratings(path: Path) -> np.ndarray:
    """MovieLens 100k ``u.data`` (tab-separated ``user item rating timestamp``, 1-based ids) as an
    int64 (N, 4) array with 0-based user and item ids."""
    rows, seen = [], {}
    with reading(path, "MovieLens ratings text (u.data)", field="data.path"), open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            fields = line.split()
            valid = len(fields) == 4 and all(field.isdigit() for field in fields)
            user, item, rating, timestamp = (int(field) for field in fields) if valid else (0, 0, 0, 0)
            if not (user >= 1 and item >= 1 and 1 <= rating <= 5):
                raise KdistillError(
                    f"{path}, line {number}: expected 'user item rating timestamp' (ids >= 1, rating 1..5), got {line.strip()!r}"
                )
            if (user, item) in seen:
                raise KdistillError(f"{path}, line {number}: user {user} rated item {item} again (first on line {seen[user, item]})")
            seen[user, item] = number
            rows.append((user - 1, item - 1, rating, timestamp))
    if not rows:
        raise KdistillError(f"{path}: no ratings")
    return np.array(rows, dtype=np.int64)


def load_movielens(config: DataConfig) -> TaskData:
    """MovieLens ratings (``data.path``: ``u.data`` or a directory holding it) as graded relevance
    rating/5. Each user's ratings are split by time (latest → test, the ones before → val); users
    with too few ratings for three parts are skipped (counted in ``meta['skipped_users']``)."""
    path = Path(config.path).expanduser()
    path = path / "u.data" if path.is_dir() else path
    if not path.is_file():
        raise KdistillError(f"data.path: {str(path)!r} does not exist (give MovieLens 100k's u.data or its directory)")
    ratings = read_ratings(path)
    ratings = ratings[np.lexsort((ratings[:, 1], ratings[:, 3], ratings[:, 0]))]  # by user, then time
    users, starts = np.unique(ratings[:, 0], return_index=True)
    histories, skipped = [], 0
    for user, own in zip(users, np.split(ratings, starts[1:])):
        parts = split_parts(len(own), config.val_fraction, config.test_fraction)
        if parts is None:
            skipped += 1
            continue
        histories.append((int(user), own[:, 1], own[:, 2] / 5.0, parts))
    if not histories:
        raise KdistillError(f"data.path: {str(path)!r}: no user has the 3 ratings needed for train, val and test")
    n_items, length = int(ratings[:, 1].max()) + 1, config.ranking.list_length
    train, val, test = build_lists(np.random.default_rng(config.split_seed), histories, n_items, length)
    meta = {"n_users": int(ratings[:, 0].max()) + 1, "n_items": n_items, "list_length": length,
            "relevance": "rating / 5", "skipped_users": skipped}
    return TaskData("movielens", "ranking", train, val, test, output_dim=length, meta=meta)
