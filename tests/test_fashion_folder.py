"""scripts/fashion_mnist_png.py writes Fashion-MNIST as PNG class folders, and the shipped
``fashion_folder_binary`` recipe reads them (shirt vs T-shirt/top, keyed by file name)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import requires_torch, set_args
from kdistill.data import load_task_data
from kdistill.data.fashion_mnist import FILES, SYSTEM_DIR, read_idx
from kdistill.recipe import DataConfig, load_recipe

SCRIPT = Path(__file__).parents[1] / "scripts" / "fashion_mnist_png.py"
pytestmark = pytest.mark.skipif(not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")


def writer():
    spec = importlib.util.spec_from_file_location("fashion_mnist_png", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shirts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fashion") / "shirts"
    assert writer().main(["--out", str(out), "--classes", "0,6", "--limit", "60", "--part", "train"]) == 0
    return out


def test_the_pngs_are_the_fashion_mnist_images_by_id(shirts):
    assert sorted(path.name for path in shirts.iterdir()) == ["shirt", "t-shirt-top"]
    assert len(list((shirts / "shirt").glob("*.png"))) == 60
    data = load_task_data(DataConfig(dataset="image_folder", path=str(shirts), cache_in_memory=True), "binary")
    images = read_idx(SYSTEM_DIR / FILES["train"][0])
    labels = read_idx(SYSTEM_DIR / FILES["train"][1])
    for key, x, y in zip(data.train.keys, data.train.x, data.train.y):
        fashion_id = int(key.split("/")[1].removesuffix(".png"))
        np.testing.assert_array_equal(x[0], images[fashion_id] / np.float32(255))
        assert labels[fashion_id] == (0 if y else 6)  # classes sorted: shirt (6) is 0, t-shirt-top (0) is 1

def test_the_writer_refuses_a_folder_with_other_files(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert writer().main(["--out", str(tmp_path), "--limit", "1"]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "mine.txt").read_text() == "keep me"


@requires_torch
def test_the_shipped_recipe_runs_on_the_folder(shirts, tmp_path, kdistill):
    recipe = load_recipe("fashion_folder_binary")
    assert recipe.data.dataset == "image_folder" and recipe.task == "binary"
    code, _, err = kdistill("run", "fashion_folder_binary", "--out", tmp_path / "out",
                            *set_args(f"data.path={shirts}", "train.epochs=1", "teacher.train.epochs=1", "compare.scratch=false"))
    assert code == 0, err
    assert (tmp_path / "out" / "report.json").is_file()
