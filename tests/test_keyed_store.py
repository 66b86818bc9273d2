"""A soft-target store keyed by file names: ``kdistill cache`` on an image folder and
``--from-predictions`` with a CSV of file names write the keys and content digests to the
manifest; a file renamed, moved, added or changed after caching is named when a run reads the store."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from conftest import read_report, requires_torch, set_args
from kdistill.data import load_task_data
from kdistill.data.samples import key_ids
from kdistill.recipe import DataConfig, load_recipe
from kdistill.store import StoreReader
from kdistill.store.for_run import open_store_for
from sources import folder_recipe, image_folder, write_image


def all_keys(data) -> list[str]:
    return [key for split in (data.train, data.val, data.test) for key in split.keys]


def predictions_csv(path, keys, offset=0.0):
    """A black-box teacher's logits keyed by file name: one row per key, shuffled."""
    rows = [(key, float(index) + offset) for index, key in enumerate(keys)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "logit"))
        writer.writerows(rows[::-1])
    return path, dict(rows)


@pytest.fixture
def folder_store(tmp_path, kdistill):
    """An image folder, its recipe, and a store imported from predictions keyed by file name."""
    root = image_folder(tmp_path / "pets")
    recipe = folder_recipe(tmp_path / "r.yaml", {"dataset": "image_folder", "path": str(root)})
    keys = all_keys(load_task_data(DataConfig(dataset="image_folder", path=str(root)), "binary"))
    answers, logits = predictions_csv(tmp_path / "answers.csv", keys)
    code, _, err = kdistill("cache", recipe, "--from-predictions", answers, "--store", tmp_path / "store", *set_args())
    assert code == 0, err
    return root, recipe, tmp_path / "store", logits


def test_predictions_keyed_by_file_name_are_stored_under_those_keys(folder_store):
    _, _, store, logits = folder_store
    manifest = json.loads((store / "manifest.json").read_text())
    assert sorted(manifest["keys"]) == sorted(logits) and len(manifest["digests"]) == len(logits)
    reader = StoreReader(store)
    keys = sorted(logits)
    np.testing.assert_array_equal(reader.fetch(key_ids(keys))[:, 0], [logits[key] for key in keys])


def test_parquet_predictions_keyed_by_file_name(tmp_path, kdistill):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    root = image_folder(tmp_path / "pets")
    recipe = folder_recipe(tmp_path / "r.yaml", {"dataset": "image_folder", "path": str(root)})
    keys = all_keys(load_task_data(DataConfig(dataset="image_folder", path=str(root)), "binary"))
    pd.DataFrame({"key": keys[::-1], "logit": np.arange(len(keys), dtype=float)}).to_parquet(tmp_path / "a.parquet")
    code, _, err = kdistill("cache", recipe, "--from-predictions", tmp_path / "a.parquet", "--store", tmp_path / "s",
                            *set_args())
    assert code == 0, err
    np.testing.assert_array_equal(StoreReader(tmp_path / "s").fetch(key_ids(keys[::-1]))[:, 0], np.arange(len(keys)))


def store_run(kdistill, recipe, store, out):
    return kdistill("run", recipe, "--out", out, *set_args(f"teacher.store={store}", "teacher.model=null",
                                                           "train.epochs=1", "data.cache_in_memory=true"))


@requires_torch
def test_a_renamed_or_moved_file_is_named_when_the_store_is_read(folder_store, kdistill, tmp_path):
    root, recipe, store, _ = folder_store
    (root / "cat" / "cat-004.png").rename(root / "cat" / "renamed.png")
    (root / "dog" / "dog-002.png").rename(root / "cat" / "dog-002.png")
    code, _, err = store_run(kdistill, recipe, store, tmp_path / "out")
    assert code == 2 and not (tmp_path / "out").exists()
    assert "sample files changed since caching: 2 added ('cat/dog-002.png', 'cat/renamed.png'), " \
           "2 removed ('cat/cat-004.png', 'dog/dog-002.png')" in err


@requires_torch
def test_a_changed_and_an_added_file_are_named(folder_store, kdistill, tmp_path):
    root, recipe, store, _ = folder_store
    write_image(root / "dog" / "dog-000.png", 999)
    write_image(root / "dog" / "new.png", 998)
    code, _, err = store_run(kdistill, recipe, store, tmp_path / "out")
    assert code == 2
    assert "1 added ('dog/new.png'), 1 changed ('dog/dog-000.png')" in err


def test_predictions_missing_a_file_name_the_file(tmp_path, kdistill):
    root = image_folder(tmp_path / "pets")
    recipe = folder_recipe(tmp_path / "r.yaml", {"dataset": "image_folder", "path": str(root)})
    keys = all_keys(load_task_data(DataConfig(dataset="image_folder", path=str(root)), "binary"))
    answers, _ = predictions_csv(tmp_path / "answers.csv", [key for key in keys if key != "dog/dog-007.png"])
    code, _, err = kdistill("cache", recipe, "--from-predictions", answers, "--store", tmp_path / "store", *set_args())
    assert code == 2 and "has no prediction for 1 of 24 sample keys ('dog/dog-007.png')" in err
    assert not (tmp_path / "store" / "manifest.json").exists()


@requires_torch
def test_cache_on_an_image_folder_keys_the_teacher_logits_by_file_name(tmp_path, kdistill):
    root = image_folder(tmp_path / "pets")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")  # skipped, and counted in the report
    data = {"dataset": "image_folder", "path": str(root), "on_bad_sample": "skip"}
    recipe = folder_recipe(tmp_path / "r.yaml", data)
    code, _, err = kdistill("run", recipe, "--out", tmp_path / "run",
                            *set_args("train.epochs=1", "teacher.train.epochs=1", "data.cache_in_memory=true",
                                      "compare.scratch=false"))
    assert code == 0, err
    assert read_report(tmp_path / "run")["data"]["skipped"] == 1
    assert "1 unreadable files skipped" in (tmp_path / "run" / "report.md").read_text()
    code, _, err = kdistill("cache", recipe, "--store", tmp_path / "store",
                            *set_args(f"teacher.path={tmp_path / 'run' / 'teacher.safetensors'}"))
    assert code == 0, err
    reader = StoreReader(tmp_path / "store")  # cached from batches read from the folder, run from memory
    assert sorted(reader.manifest.keys) == sorted(str(path.relative_to(root)) for path in root.rglob("*-*.png"))
    copy = tmp_path / "copy"  # the same files in another folder: the same store fits
    shutil.copytree(root, copy)
    moved = load_recipe(str(folder_recipe(tmp_path / "moved.yaml", {**data, "path": str(copy)})),
                        [f"teacher.store={tmp_path / 'store'}", "teacher.model=null"])
    assert open_store_for(moved, load_task_data(moved.data, moved.task)).manifest.keys == reader.manifest.keys


@requires_torch
def test_the_same_files_created_in_another_order_train_the_same_student(tmp_path, kdistill):
    from safetensors.numpy import load_file

    pairs = [(c, i) for c in range(2) for i in range(12)]
    students = []
    for name, order in (("a", pairs), ("b", pairs[::-1])):
        root = image_folder(tmp_path / name, order=order)
        recipe = folder_recipe(tmp_path / f"{name}.yaml", {"dataset": "image_folder", "path": str(root),
                                                           "cache_in_memory": True})
        code, _, err = kdistill("run", recipe, "--out", tmp_path / f"run-{name}", *set_args("compare.scratch=false", "train.epochs=1", "teacher.train.epochs=1"))
        assert code == 0, err
        students.append(load_file(tmp_path / f"run-{name}" / "student.safetensors"))
    assert students[0].keys() == students[1].keys()
    for name in students[0]:
        np.testing.assert_array_equal(students[0][name], students[1][name])


def test_predictions_for_a_table_whose_ids_are_numbers_match_by_key(tmp_path, kdistill):
    table = tmp_path / "reviews.jsonl"
    table.write_text("".join(json.dumps({"id": 100 + i, "text": f"word{i % 2} {i}", "label": i % 2}) + "\n"
                             for i in range(30)))
    recipe = folder_recipe(tmp_path / "r.yaml", {"dataset": "text_table", "path": str(table)})
    answers, logits = predictions_csv(tmp_path / "answers.csv", [str(100 + i) for i in range(30)])
    code, _, err = kdistill("cache", recipe, "--from-predictions", answers, "--store", tmp_path / "store", *set_args())
    assert code == 0, err
    keys = sorted(logits)
    np.testing.assert_array_equal(StoreReader(tmp_path / "store").fetch(key_ids(keys))[:, 0], [logits[k] for k in keys])
