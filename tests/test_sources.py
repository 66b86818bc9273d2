"""Keyed sources on real files: image folders (class folders, a labels CSV, a transfer folder), text
folders and tables, Hugging Face datasets and Python samples; keys and splits that do not depend
on the order files are listed or created in."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest

from kdistill.data import from_samples, load_task_data
from kdistill.data.samples import is_streamed, key_ids
from kdistill.recipe import DataConfig
from sources import image_folder, text_folder, write_image


def load(task: str = "binary", **data) -> object:
    return load_task_data(DataConfig(**data), task)


def test_image_folder_keys_labels_and_pixels(tmp_path):
    root = image_folder(tmp_path / "pets")
    data = load(dataset="image_folder", path=str(root))
    assert data.meta["classes"] == ["cat", "dog"] and data.output_dim == 1
    assert data.input_shape == (1, 8, 8) and is_streamed(data.train.x)
    assert sum(map(len, (data.train, data.val, data.test))) == 24
    for split in (data.train, data.val, data.test):
        assert (split.ids == key_ids(split.keys.tolist())).all()
        for row, key in enumerate(split.keys):
            name, index = key.split("/")[1].removesuffix(".png").split("-")
            assert key.startswith(f"{name}/") and split.y[row] == (name == "dog")
            expected = image_array_for(name, int(index))
            np.testing.assert_array_equal(split.x[row][0], expected.astype(np.float32) / 255)


def image_array_for(name: str, index: int) -> np.ndarray:
    from sources import image_array

    return image_array(1000 * ("cat", "dog").index(name) + index)


def test_image_folder_in_memory_matches_on_demand_and_keeps_the_fingerprint(tmp_path):
    root = image_folder(tmp_path / "pets")
    streamed = load(dataset="image_folder", path=str(root))
    held = load(dataset="image_folder", path=str(root), cache_in_memory=True)
    assert isinstance(held.train.x, np.ndarray)
    np.testing.assert_array_equal(held.train.x, streamed.train.x[np.arange(len(streamed.train))])
    assert held.fingerprint() == streamed.fingerprint()
    (root / "cat" / "cat-000.png").write_bytes((root / "cat" / "cat-001.png").read_bytes())
    assert load(dataset="image_folder", path=str(root)).fingerprint() != streamed.fingerprint()


def test_keys_and_splits_do_not_depend_on_the_creation_order(tmp_path):
    pairs = [(c, i) for c in range(2) for i in range(15)]
    shuffled = pairs[:]
    random.Random(3).shuffle(shuffled)
    first = load(dataset="image_folder", path=str(image_folder(tmp_path / "a", order=pairs)))
    second = load(dataset="image_folder", path=str(image_folder(tmp_path / "b", order=shuffled[::-1])))
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.keys.tolist() == b.keys.tolist() and (a.ids == b.ids).all() and (a.y == b.y).all()
    assert first.fingerprint() == second.fingerprint()


def test_rgb_jpeg_and_webp_files_with_resize_and_mode(tmp_path):
    root = tmp_path / "photos"
    for i in range(6):
        write_image(root / "a" / f"{i}.jpg", i, size=(10, 12), channels=3, quality=95)
        write_image(root / "b" / f"{i}.webp", 10 + i, size=(16, 16), channels=3, lossless=True)
    data = load(dataset="image_folder", path=str(root), image={"size": [8, 8]}, val_fraction=0.2, test_fraction=0.2)
    assert data.input_shape == (3, 8, 8) and data.meta["decode"] == {"image": {"size": [8, 8], "mode": "RGB"}}
    grey = load(dataset="image_folder", path=str(root), image={"size": [8, 8], "mode": "L"},
                val_fraction=0.2, test_fraction=0.2)
    assert grey.input_shape == (1, 8, 8)
    batch = data.train.x[:4]
    assert batch.dtype == np.float32 and 0 <= batch.min() and batch.max() <= 1


def test_flat_folder_with_a_labels_csv(tmp_path):
    root = tmp_path / "flat"
    rows = [("file", "label")]
    for i in range(20):
        write_image(root / f"img{i:02d}.png", i)
        rows.append((f"img{i:02d}.png", ["ok", "defect", "scratch"][i % 3]))
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    data = load("classification", dataset="image_folder", path=str(root), labels=str(table),
                val_fraction=0.2, test_fraction=0.2)
    assert data.meta["classes"] == ["defect", "ok", "scratch"] and data.output_dim == 3
    keys = np.concatenate([data.train.keys, data.val.keys, data.test.keys])
    assert sorted(keys) == [f"img{i:02d}.png" for i in range(20)]


def test_an_unlabeled_transfer_folder(tmp_path):
    root = image_folder(tmp_path / "pets")
    for i in range(7):
        write_image(tmp_path / "unlabeled" / "batch1" / f"u{i}.png", 500 + i)
    data = load(dataset="image_folder", path=str(root), transfer={"path": str(tmp_path / "unlabeled")})
    assert data.transfer.y is None and len(data.transfer) == 7
    assert data.transfer.keys.tolist() == [f"batch1/u{i}.png" for i in range(7)]
    assert data.transfer.x[:3].shape == (3, 1, 8, 8)


def test_text_folder_featurised_on_read_and_raw_text_kept(tmp_path):
    root = text_folder(tmp_path / "news")
    data = load("classification", dataset="text_folder", path=str(root), text={"features": 256, "ngrams": [1, 1]})
    assert data.input_shape == (256,) and data.meta["classes"] == ["money", "sport"]
    assert data.train.x.raw(np.array([0]))[0].startswith("bank shares")
    rows = data.train.x[:5]
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    money, sport = (data.train.x[np.flatnonzero(data.train.y == c)] for c in (0, 1))
    assert (money.mean(0) @ sport.mean(0)) < (money.mean(0) @ money.mean(0))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_text_table_keyed_by_its_id_column(tmp_path, suffix):
    records = [{"id": f"doc-{i}", "text": ("great fun" if i % 2 else "dull slow") + f" {i}", "label": i % 2}
               for i in range(30)]
    path = tmp_path / f"reviews{suffix}"
    if suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["id", "text", "label"])
            writer.writeheader()
            writer.writerows(records)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    else:
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        pd.DataFrame(records).to_parquet(path)
    data = load(dataset="text_table", path=str(path), text={"features": 64})
    keys = sorted(np.concatenate([data.train.keys, data.val.keys, data.test.keys]))
    assert keys == sorted(f"doc-{i}" for i in range(30)) and data.meta["classes"] == ["0", "1"]
    assert data.input_shape == (64,)
    reversed_table = tmp_path / f"reversed{suffix}"
    if suffix == ".jsonl":
        reversed_table.write_text("".join(json.dumps(record) + "\n" for record in records[::-1]), encoding="utf-8")
        again = load(dataset="text_table", path=str(reversed_table), text={"features": 64})
        assert again.train.keys.tolist() == data.train.keys.tolist()


def test_hugging_face_dataset_from_disk_and_from_a_csv_builder(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # a builder's Arrow cache
    root = image_folder(tmp_path / "pets")
    files = sorted(str(path) for path in root.rglob("*.png"))
    built = datasets.Dataset.from_dict({"image": files, "label": [int("dog" in f) for f in files],
                                        "name": [f.split("/")[-1] for f in files]})
    built = built.cast_column("image", datasets.Image()).cast_column("label", datasets.ClassLabel(names=["cat", "dog"]))
    built.save_to_disk(str(tmp_path / "saved"))
    data = load(dataset="hf", path=str(tmp_path / "saved"), hf={"id": "name"})
    folder = load(dataset="image_folder", path=str(root))
    assert data.meta["classes"] == ["cat", "dog"] and data.input_shape == (1, 8, 8)
    assert sorted(data.train.keys) == sorted(key.split("/")[1] for key in folder.train.keys)
    assert sorted(data.train.digests) == sorted(folder.train.digests)  # the same bytes, digested alike
    table = tmp_path / "t.csv"
    table.write_text("text,label\n" + "".join(f"word{i % 2} text,{i % 2}\n" for i in range(20)))
    texts = load(dataset="hf", hf={"builder": "csv", "data_files": str(table)}, text={"features": 32})
    assert texts.input_shape == (32,) and len(texts.train) + len(texts.val) + len(texts.test) == 20


def test_python_samples_keyed_and_split_by_key_whatever_their_order():
    items = [(f"s{i:03d}", np.full((2, 3), i, np.float32), i % 2) for i in range(40)]
    data = from_samples(items, task="binary")
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    again = from_samples(iter(shuffled), task="binary")  # an iterable: held in memory
    assert data.train.keys.tolist() == again.train.keys.tolist()
    assert is_streamed(data.train.x) and not is_streamed(again.train.x)
    np.testing.assert_array_equal(data.train.x[np.arange(len(data.train))], again.train.x)
    assert data.fingerprint() == again.fingerprint()
    keyed = from_samples([(x, y) for _, x, y in items], keys=[key for key, _, _ in items], task="binary")
    assert keyed.train.keys.tolist() == data.train.keys.tolist()


def test_python_samples_from_a_torch_dataset():
    torch = pytest.importorskip("torch")
    tensors = torch.utils.data.TensorDataset(torch.arange(60, dtype=torch.float32).reshape(30, 2),
                                             torch.arange(30) % 3)
    data = from_samples(tensors, keys=[f"row-{i}" for i in range(30)], val_fraction=0.2, test_fraction=0.2)
    assert data.output_dim == 3 and data.input_shape == (2,)
    row = int(data.train.keys[0].split("-")[1])
    np.testing.assert_array_equal(data.train.x[0], [2 * row, 2 * row + 1])


def test_python_samples_from_a_tf_data_dataset():
    tf = pytest.importorskip("tensorflow")
    images = np.random.default_rng(0).random((30, 4), dtype=np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant([f"k{i:02d}" for i in range(30)]), images,
                                                  tf.range(30) % 2))
    data = from_samples(dataset, task="binary")  # an iterable of tensors: read once, held in memory
    assert sorted(np.concatenate([data.train.keys, data.val.keys, data.test.keys])) == [f"k{i:02d}" for i in range(30)]
    row = int(data.train.keys[0][1:])
    np.testing.assert_array_equal(data.train.x[0], images[row])
    assert data.train.y[0] == row % 2
