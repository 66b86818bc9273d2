"""Data loaders: shapes, dtypes, stable ids, splits, transfer sets and named errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from kdistill.data import fashion_mnist, load_task_data
from kdistill.data.ranking import latent_factor_model, read_ratings
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig
from kdistill.report.metrics import ndcg_at_k

FIXTURES = Path(__file__).parent / "fixtures"


def all_ids(data):
    return np.concatenate([s.ids for s in (data.train, data.val, data.test, data.transfer) if s is not None])


# --- embedded -----------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_stable_disjoint_ids():
    data = load_task_data(DataConfig(dataset="digits"), "classification")
    assert data.output_dim == 10 and data.input_shape == (64,)
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert len(data.test) == pytest.approx(0.2 * 1797, abs=10)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64 and split.ids.dtype == np.int64
        assert split.x.min() >= 0 and split.x.max() <= 1
    assert data.train.x.max() == 1.0
    assert set(np.unique(data.train.y)) == set(range(10)) and set(np.unique(data.test.y)) == set(range(10))
    ids = all_ids(data)
    assert len(np.unique(ids)) == len(ids) == 1797 and ids.min() == 0 and ids.max() == 1796
    again = load_task_data(DataConfig(dataset="digits"), "classification")
    assert again.fingerprint() == data.fingerprint()
    assert np.array_equal(again.test.ids, data.test.ids)
    other = load_task_data(DataConfig(dataset="digits", split_seed=1), "classification")
    assert not np.array_equal(other.test.ids, data.test.ids)


def test_digits_ids_are_sklearn_rows():
    from sklearn.datasets import load_digits

    raw = load_digits()
    data = load_task_data(DataConfig(dataset="digits"), "classification")
    np.testing.assert_allclose(data.val.x, raw.data[data.val.ids] / 16, rtol=1e-6)
    assert np.array_equal(data.val.y, raw.target[data.val.ids])


def test_dataset_must_fit_task():
    with pytest.raises(KdistillError, match="data.dataset: 'digits' gives classification data, recipe task is 'binary'"):
        load_task_data(DataConfig(dataset="digits"), "binary")
    with pytest.raises(KdistillError, match="synthetic_ranking"):
        load_task_data(DataConfig(dataset="breast_cancer"), "ranking")


def test_breast_cancer_binary_and_standardized_on_train():
    data = load_task_data(DataConfig(dataset="breast_cancer"), "binary")
    assert data.output_dim == 1 and data.input_shape == (30,)
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.float32
        assert set(np.unique(split.y)) == {0.0, 1.0}
    np.testing.assert_allclose(data.train.x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data.train.x.std(0), 1, atol=1e-4)
    assert abs(data.test.x.mean()) > 1e-4  # test statistics are not used
    assert len(all_ids(data)) == len(np.unique(all_ids(data))) == 569


def test_limit_keeps_a_seeded_subset_of_train():
    full = load_task_data(DataConfig(dataset="digits"), "classification")
    small = load_task_data(DataConfig(dataset="digits", limit=100), "classification")
    assert len(small.train) == 100 and len(small.val) == len(full.val) and len(small.test) == len(full.test)
    assert np.isin(small.train.ids, full.train.ids).all()
    assert np.array_equal(small.train.ids, load_task_data(DataConfig(dataset="digits", limit=100), "classification").train.ids)


# --- transfer sets ------------------------------------------------------------------------------


def test_transfer_fraction_holds_out_unlabeled_training_samples():
    full = load_task_data(DataConfig(dataset="digits"), "classification")
    data = load_task_data(DataConfig(dataset="digits", transfer={"fraction": 0.25}), "classification")
    assert data.transfer.y is None
    assert len(data.transfer) == round(0.25 * len(full.train))
    assert len(data.train) + len(data.transfer) == len(full.train)
    assert not np.isin(data.transfer.ids, data.train.ids).any()
    assert set(np.concatenate([data.train.ids, data.transfer.ids])) == set(full.train.ids)
    assert np.array_equal(data.test.ids, full.test.ids)


def test_transfer_path_ids_continue_after_dataset(tmp_path):
    x = np.random.default_rng(0).random((7, 64))
    np.save(tmp_path / "t.npy", x)
    np.savetxt(tmp_path / "t.csv", x, delimiter=",", header=",".join(f"p{i}" for i in range(64)), comments="")
    for name in ("t.npy", "t.csv"):
        data = load_task_data(DataConfig(dataset="digits", transfer={"path": str(tmp_path / name)}), "classification")
        assert data.transfer.y is None and data.transfer.x.dtype == np.float32
        np.testing.assert_allclose(data.transfer.x, x, rtol=1e-6)
        assert data.transfer.ids.tolist() == list(range(1797, 1804))


def test_transfer_path_shape_mismatch_is_named(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.zeros((5, 30), np.float32))
    config = DataConfig(dataset="digits", transfer={"path": str(tmp_path / "t.npz")})
    with pytest.raises(KdistillError, match=r"data\.transfer\.path.*\(30,\).*\(64,\)"):
        load_task_data(config, "classification")


# --- fashion-mnist ------------------------------------------------------------------------------


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 8, array.ndim, *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_tiny_fashion(directory, n_train: int = 40, n_test: int = 20) -> np.ndarray:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_train, 28, 28))
    write_idx(directory / "train-images-idx3-ubyte.gz", images)
    write_idx(directory / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)
    return images


@pytest.fixture(scope="module")
def fashion():
    if not fashion_mnist.SYSTEM_DIR.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    return load_task_data(DataConfig(dataset="fashion_mnist"), "classification")


def test_fashion_mnist_real_files(fashion):
    assert (len(fashion.train), len(fashion.val), len(fashion.test)) == (54000, 6000, 10000)
    assert fashion.input_shape == (1, 28, 28) and fashion.output_dim == 10
    assert fashion.train.x.dtype == np.float32 and fashion.train.y.dtype == np.int64
    assert fashion.test.x.min() == 0.0 and fashion.test.x.max() == 1.0
    assert sorted(np.concatenate([fashion.train.ids, fashion.val.ids]).tolist()) == list(range(60000))
    assert fashion.test.ids.tolist() == list(range(60000, 70000))
    assert np.bincount(fashion.test.y).tolist() == [1000] * 10  # the official balanced test set
    assert np.bincount(np.concatenate([fashion.train.y, fashion.val.y])).tolist() == [6000] * 10


def test_fashion_mnist_limit(fashion):
    small = load_task_data(DataConfig(dataset="fashion_mnist", limit=500), "classification")
    assert len(small.train) == 500 and len(small.val) == 6000 and len(small.test) == 10000
    assert np.isin(small.train.ids, fashion.train.ids).all()


def test_fashion_mnist_missing_directory_says_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(KdistillError, match="apt-get install dataset-fashion-mnist") as caught:
        load_task_data(DataConfig(dataset="fashion_mnist", path=str(tmp_path)), "classification")
    assert "KDISTILL_DATA" in str(caught.value) and str(tmp_path) in str(caught.value)
    monkeypatch.setenv("KDISTILL_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "system")
    with pytest.raises(KdistillError, match="t10k-labels-idx1-ubyte.gz") as caught:
        load_task_data(DataConfig(dataset="fashion_mnist"), "classification")
    for place in (tmp_path / "env", tmp_path / "env" / "fashion-mnist", tmp_path / "system"):
        assert str(place) in str(caught.value)


@pytest.mark.parametrize("subdir", ["", "fashion-mnist"])
def test_fashion_mnist_from_kdistill_data(tmp_path, monkeypatch, subdir):
    images = write_tiny_fashion(tmp_path / subdir)
    monkeypatch.setenv("KDISTILL_DATA", str(tmp_path))
    data = load_task_data(DataConfig(dataset="fashion_mnist", val_fraction=0.25), "classification")
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 20)
    np.testing.assert_allclose(data.val.x[:, 0], images[data.val.ids] / 255, rtol=1e-6)
    assert data.test.ids.tolist() == list(range(60000, 60020))
    assert data.meta["source"] == str(tmp_path / subdir).rstrip("/")


def test_fashion_mnist_corrupt_idx_is_named(tmp_path):
    write_tiny_fashion(tmp_path)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-200])  # truncated gzip stream
    with pytest.raises(KdistillError, match="train-images-idx3-ubyte.gz"):
        load_task_data(DataConfig(dataset="fashion_mnist", path=str(tmp_path)), "classification")
    with gzip.open(target, "wb") as handle:  # valid gzip, IDX payload shorter than its header says
        handle.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 40, 28, 28) + bytes(100))
    with pytest.raises(KdistillError, match="train-images-idx3-ubyte.gz: truncated or corrupt IDX"):
        load_task_data(DataConfig(dataset="fashion_mnist", path=str(tmp_path)), "classification")


# --- user arrays --------------------------------------------------------------------------------


def arrays_config(path, **kwargs) -> DataConfig:
    return DataConfig(dataset="arrays", path=str(path), **kwargs)


def test_arrays_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x, y, ids = rng.random((120, 3, 4)), rng.integers(0, 4, 120), np.arange(1000, 1120)
    np.savez(tmp_path / "d.npz", x=x, y=y, ids=ids)
    data = load_task_data(arrays_config(tmp_path / "d.npz"), "classification")
    assert data.output_dim == 4 and data.input_shape == (3, 4) and data.train.y.dtype == np.int64
    got = np.concatenate([data.train.ids, data.val.ids, data.test.ids])
    assert sorted(got.tolist()) == ids.tolist()
    np.testing.assert_allclose(data.test.x, x[data.test.ids - 1000], rtol=1e-6)
    assert np.array_equal(data.test.y, y[data.test.ids - 1000])


def test_arrays_csv_columns_and_tasks(tmp_path):
    rng = np.random.default_rng(1)
    table = np.column_stack([np.arange(50) + 7, rng.random(50), rng.integers(0, 2, 50), rng.random(50)])
    np.savetxt(tmp_path / "h.csv", table, delimiter=",", header="id,a,label,b", comments="")
    data = load_task_data(arrays_config(tmp_path / "h.csv"), "binary")
    assert data.input_shape == (2,) and data.train.y.dtype == np.float32 and data.output_dim == 1
    rows = data.test.ids - 7
    np.testing.assert_allclose(data.test.x, table[rows][:, [1, 3]], rtol=1e-6)
    assert np.array_equal(data.test.y, table[rows, 2])
    np.savetxt(tmp_path / "plain.csv", table[:, 1:], delimiter=",")  # no header: last column is the target
    data = load_task_data(arrays_config(tmp_path / "plain.csv"), "regression")
    assert data.output_dim == 1 and data.train.y.shape == (len(data.train), 1)
    np.testing.assert_allclose(data.train.y[:, 0], table[data.train.ids, 3], rtol=1e-6)


def test_arrays_parquet(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"target": np.arange(60) % 3, "f1": np.arange(60.0), "f2": -np.arange(60.0)})
    frame.to_parquet(tmp_path / "d.parquet")
    data = load_task_data(arrays_config(tmp_path / "d.parquet"), "classification")
    assert data.output_dim == 3
    np.testing.assert_allclose(data.val.x[:, 0], data.val.ids)
    assert np.array_equal(data.val.y, data.val.ids % 3)


@pytest.mark.parametrize(
    ("labels", "task", "message"),
    [
        ([0, 1, 2.5], "classification", "integers 0..C-1; found \\[2.5\\]"),
        ([0, -1, 2], "classification", "found \\[-1"),
        ([0, 1, 2], "binary", "0 or 1; found \\[2"),
    ],
)
def test_arrays_label_errors(tmp_path, labels, task, message):
    y = np.resize(np.array(labels, dtype=float), 30)
    np.savez(tmp_path / "d.npz", x=np.zeros((30, 2)), y=y)
    with pytest.raises(KdistillError, match=message):
        load_task_data(arrays_config(tmp_path / "d.npz"), task)


def test_arrays_file_errors(tmp_path):
    with pytest.raises(KdistillError, match="does not exist"):
        load_task_data(arrays_config(tmp_path / "none.npz"), "classification")
    np.savez(tmp_path / "d.npz", x=np.zeros((30, 2)))
    with pytest.raises(KdistillError, match=r"lacks key\(s\) \['y'\]"):
        load_task_data(arrays_config(tmp_path / "d.npz"), "classification")
    (tmp_path / "bad.csv").write_text("a,label\n1,0\n2,x\n")
    with pytest.raises(KdistillError, match="bad.csv: not a numeric CSV"):
        load_task_data(arrays_config(tmp_path / "bad.csv"), "classification")


# --- ranking ------------------------------------------------------------------------------------


RANKING = DataConfig(dataset="synthetic_ranking", ranking={"n_users": 200, "n_items": 150, "list_length": 30})


def check_lists(data, n_items: int) -> None:
    length = data.output_dim
    for split in (data.train, data.val, data.test):
        assert split.x.dtype == np.int64 and split.y.dtype == np.float32
        assert split.x.shape == (len(split), 1 + length) and split.y.shape == (len(split), length)
        assert ((split.y > 0).sum(1) >= 1).all()
        items = np.sort(split.x[:, 1:], axis=1)
        assert (np.diff(items, axis=1) > 0).all()
        assert items.min() >= 0 and items.max() < n_items
    ids = all_ids(data)
    assert len(np.unique(ids)) == len(ids)


def test_synthetic_ranking_lists():
    data = load_task_data(RANKING, "ranking")
    assert data.output_dim == 30
    assert (data.meta["n_users"], data.meta["n_items"], data.meta["list_length"]) == (200, 150, 30)
    assert (len(data.train), len(data.val), len(data.test)) == (800, 200, 200)
    check_lists(data, 150)
    assert set(np.unique(data.train.y)) == {0.0, 1.0}
    # positives: 10 per user = 7 train, 1 val, 2 test, disjoint across splits
    assert (data.train.y.sum(1) == 7).all() and (data.val.y.sum(1) == 1).all() and (data.test.y.sum(1) == 2).all()
    user = data.test.x[0, 0]
    test_pos = set(data.test.x[0, 1:][data.test.y[0] > 0])
    train_pos = set(data.train.x[data.train.x[:, 0] == user][:, 1:][data.train.y[data.train.x[:, 0] == user] > 0])
    assert not test_pos & train_pos
    assert load_task_data(RANKING, "ranking").fingerprint() == data.fingerprint()
    assert load_task_data(RANKING.model_copy(update={"split_seed": 3}), "ranking").fingerprint() != data.fingerprint()


def test_true_affinity_ranks_test_lists_better_than_random():
    data = load_task_data(RANKING, "ranking")
    affinity, _ = latent_factor_model(RANKING.ranking, RANKING.split_seed)
    x = data.test.x
    true_scores = affinity[x[:, :1], x[:, 1:]]
    random_scores = np.random.default_rng(0).random(true_scores.shape)
    true_ndcg, random_ndcg = ndcg_at_k(true_scores, data.test.y), ndcg_at_k(random_scores, data.test.y)
    assert true_ndcg > random_ndcg + 0.2, (true_ndcg, random_ndcg)


def test_synthetic_ranking_errors():
    few = DataConfig(dataset="synthetic_ranking", ranking={"positives": 2})
    with pytest.raises(KdistillError, match="data.ranking.positives: 2"):
        load_task_data(few, "ranking")
    long = DataConfig(dataset="synthetic_ranking", ranking={"n_items": 40, "list_length": 40})
    with pytest.raises(KdistillError, match="data.ranking.list_length: 40"):
        load_task_data(long, "ranking")


def test_movielens_fixture():
    ratings = read_ratings(FIXTURES / "u.data")
    assert ratings.shape == (300, 4) and ratings[:, 0].min() == 0 and ratings[:, 0].max() == 19
    assert ratings[:, 1].max() <= 39 and set(np.unique(ratings[:, 2])) <= {1, 2, 3, 4, 5}
    config = DataConfig(dataset="movielens", path=str(FIXTURES), ranking={"list_length": 20})
    data = load_task_data(config, "ranking")
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 20)
    assert data.meta["n_users"] == 20 and data.meta["n_items"] == 40
    check_lists(data, 40)
    np.testing.assert_allclose(data.test.y * 5, np.round(data.test.y * 5), atol=1e-5)  # rating / 5 or 0
    for row, gains in zip(data.test.x, data.test.y):  # test holds each user's latest ratings
        own = ratings[ratings[:, 0] == row[0]]
        tested = np.isin(own[:, 1], row[1:][gains > 0])
        assert tested.any() and own[tested, 3].min() >= own[~tested, 3].max()
        np.testing.assert_allclose(np.sort(gains[gains > 0]), np.sort(own[tested, 2] / 5), rtol=1e-6)


def test_movielens_malformed_lines(tmp_path):
    good = (FIXTURES / "u.data").read_text().splitlines()
    for bad, message in (("3\t7\tx\t881250949", "line 3"), ("3\t7\t9\t881250949", "line 3"), (good[0], "line 3: user")):
        path = tmp_path / "u.data"
        path.write_text("\n".join([good[0], good[1], bad, *good[2:]]) + "\n")
        with pytest.raises(KdistillError, match=f"u.data, {message}"):
            load_task_data(DataConfig(dataset="movielens", path=str(path), ranking={"list_length": 20}), "ranking")
