"""Bad keyed sources: each is a named error (field, file, what is wrong), exit code 2 from the CLI,
and the run writes nothing; ``data.on_bad_sample: skip`` leaves bad files out and counts them."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from conftest import set_args
from kdistill.data import load_task_data
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig
from sources import folder_recipe, image_folder, text_folder, write_image


def truncated_png(root):
    path = root / "cat" / "cat-003.png"
    path.write_bytes(path.read_bytes()[:-30])  # the pixel data cut short
    return "cat/cat-003.png"


def labels_csv(path, rows):
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([("file", "label"), *rows])
    return path


def corrupt_image(tmp_path):
    root = image_folder(tmp_path / "d")
    truncated_png(root)
    return {"dataset": "image_folder", "path": str(root)}, ["data.path", "cat-003.png", "not an image Pillow can read", "Truncated"]


def not_an_image(tmp_path):
    root = image_folder(tmp_path / "d")
    (root / "dog" / "notes.png").write_text("not a picture")
    return {"dataset": "image_folder", "path": str(root)}, ["dog/notes.png", "not an image Pillow can read",
                                                            "no image format"]


def non_utf8_text(tmp_path):
    root = text_folder(tmp_path / "d")
    (root / "sport" / "latin1.txt").write_bytes("caf\xe9 goal".encode("latin-1"))
    return {"dataset": "text_folder", "path": str(root)}, ["data.path", "sport/latin1.txt", "not UTF-8 text"]


def non_utf8_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"id,text,label\n" + b"".join(f"r{i},word {i},{i % 2}\n".encode() for i in range(20))
                     + b"r20,caf\xe9,1\n")
    return {"dataset": "text_table", "path": str(path)}, ["t.csv", "line", "key 'r20'", "not UTF-8"]


def empty_class_folder(tmp_path):
    root = image_folder(tmp_path / "d")
    (root / "bird").mkdir()
    return {"dataset": "image_folder", "path": str(root)}, ["data.path", "class folder", "bird", "holds no images"]


def one_class(tmp_path):
    root = image_folder(tmp_path / "d", classes=("cat",))
    return {"dataset": "image_folder", "path": str(root)}, ["data.path", "one class ('cat')"]


def mixed_sizes(tmp_path):
    root = image_folder(tmp_path / "d")
    write_image(root / "dog" / "big.png", 7, size=(16, 16))
    return {"dataset": "image_folder", "path": str(root)}, ["mixed sizes", "dog/big.png", "16x16", "data.image.size"]


def labels_name_missing_files(tmp_path):
    root = tmp_path / "flat"
    for i in range(10):
        write_image(root / f"{i}.png", i)
    rows = [(f"{i}.png", i % 2) for i in range(10)] + [("gone.png", 0), ("lost.png", 1)]
    table = labels_csv(tmp_path / "labels.csv", rows)
    return ({"dataset": "image_folder", "path": str(root), "labels": str(table)},
            ["data.labels", "labels.csv", "names 2 files", "'gone.png', 'lost.png'"])


def labels_repeat_a_file(tmp_path):
    root = tmp_path / "flat"
    for i in range(10):
        write_image(root / f"{i}.png", i)
    table = labels_csv(tmp_path / "labels.csv", [(f"{i}.png", i % 2) for i in range(10)] + [("3.png", 0)])
    return ({"dataset": "image_folder", "path": str(root), "labels": str(table)},
            ["data.labels", "labels.csv", "sample key '3.png' appears 2 times"])


def table_repeats_an_id(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f'{{"id": "{i % 15}", "text": "w {i}", "label": {i % 2}}}\n' for i in range(20)))
    return {"dataset": "text_table", "path": str(path)}, ["t.jsonl", "sample key", "appears 2 times", "5 repeated keys"]


def files_outside_class_folders(tmp_path):
    root = image_folder(tmp_path / "d")
    write_image(root / "stray.png", 3)
    return {"dataset": "image_folder", "path": str(root)}, ["outside class folders", "'stray.png'", "data.labels"]


CASES = [corrupt_image, not_an_image, non_utf8_text, non_utf8_row, empty_class_folder, one_class, mixed_sizes,
         labels_name_missing_files, labels_repeat_a_file, table_repeats_an_id, files_outside_class_folders]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_source_is_a_named_error_with_exit_2_and_nothing_written(case, tmp_path, kdistill):
    data, fragments = case(tmp_path)
    recipe = folder_recipe(tmp_path / "r.yaml", data)
    out = tmp_path / "out"
    code, _, err = kdistill("run", recipe, "--out", out, *set_args())
    assert code == 2, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists()


def test_skip_leaves_bad_files_out_and_counts_them(tmp_path):
    root = image_folder(tmp_path / "d")
    bad = truncated_png(root)
    (root / "dog" / "notes.png").write_text("not a picture")
    data = load_task_data(DataConfig(dataset="image_folder", path=str(root), on_bad_sample="skip"), "binary")
    assert data.meta["bad_samples"] == {"policy": "skip", "skipped": 2, "examples": [bad, "dog/notes.png"]}
    kept = [key for split in (data.train, data.val, data.test) for key in split.keys]
    assert len(kept) == 23 and bad not in kept


def test_skip_counts_non_utf8_texts(tmp_path):
    root = text_folder(tmp_path / "d")
    (root / "money" / "x.txt").write_bytes(b"\xff\xfe bad")
    data = load_task_data(DataConfig(dataset="text_folder", path=str(root), on_bad_sample="skip"), "binary")
    assert data.meta["bad_samples"]["skipped"] == 1 and data.meta["bad_samples"]["examples"] == ["money/x.txt"]


def test_a_class_whose_every_file_is_skipped_is_an_error(tmp_path):
    root = image_folder(tmp_path / "d", per_class=1)
    image_folder(root, per_class=12, classes=("dog",))
    truncated = root / "cat" / "cat-000.png"
    truncated.write_bytes(truncated.read_bytes()[:30])
    with pytest.raises(KdistillError, match="every file of class 'cat' was skipped"):
        load_task_data(DataConfig(dataset="image_folder", path=str(root), on_bad_sample="skip"), "binary")


def test_pixel_data_that_fails_only_when_decoded_is_named_when_the_batch_is_read(tmp_path):
    root = image_folder(tmp_path / "d")
    for i in range(12):
        write_image(root / "cat" / f"cat-{i:03d}.jpg", i, quality=90)
    cut = root / "cat" / "cat-005.jpg"
    cut.write_bytes(cut.read_bytes()[:-20])  # the header is whole: Pillow's verify passes a JPEG
    data = load_task_data(DataConfig(dataset="image_folder", path=str(root)), "binary")
    split = next(split for split in (data.train, data.val, data.test) if "cat/cat-005.jpg" in split.keys)
    with pytest.raises(KdistillError, match=r"data.path: .*cat-005.jpg: not a decodable image \(image file is truncated"):
        split.x[np.arange(len(split))]
