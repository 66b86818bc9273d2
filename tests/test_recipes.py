"""Every shipped recipe validates and runs end to end (cut to one short epoch on a data subset)."""

from __future__ import annotations

import pytest

from conftest import by_role, read_report, set_args
from kdistill.losses import FEATURE_LOSSES
from kdistill.recipe import builtin_recipes, load_recipe
from kdistill.report.metrics import PRIMARY

SHIPPED = ("digits_mlp", "breast_cancer_binary", "fashion_mnist_mlp", "fashion_mnist_cnn", "ranking",
           "binary_keras", "fashion_mnist_lab_keras", "ranking_jax")


def test_the_shipped_recipes_are_all_there():
    assert set(SHIPPED) <= set(builtin_recipes())


def test_every_feature_loss_validates_with_its_settings():
    pairs = ", ".join(f"{{student: fc1, teacher: fc1, loss: {name}}}" for name in FEATURE_LOSSES)
    recipe = load_recipe(None, [
        "losses={" + ", ".join(f"{name}: {{}}" for name in FEATURE_LOSSES) + "}",
        "losses.embedding={metric: cosine}",
        "weights={" + ", ".join(f"{name}: 0.1" for name in FEATURE_LOSSES) + "}",
        f"features=[{pairs}]",
    ])
    assert [pair.loss for pair in recipe.features] == list(FEATURE_LOSSES)
    assert recipe.loss_settings("embedding") == {"metric": "cosine"}
    assert recipe.loss_settings("hidden_cosine") == {}


FRAMEWORK = {"torch": "torch", "keras": "keras", "jax": "flax"}  # what each backend imports


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_runs(name, tmp_path, kdistill):
    recipe = load_recipe(name)
    pytest.importorskip(FRAMEWORK[recipe.backend])
    subset = ["data.limit=400"] if recipe.data.dataset == "fashion_mnist" else []
    if recipe.data.dataset == "synthetic_ranking":
        subset = ["data.ranking.n_users=40", "data.ranking.n_items=120"]
    code, _, err = kdistill("run", name, "--out", tmp_path / "out", *set_args(*subset, "train.epochs=1", "teacher.train.epochs=1"))
    assert code == 0, err
    models = by_role(read_report(tmp_path / "out"))
    assert set(models) == {"teacher", "distilled", "scratch"}
    metric = PRIMARY[recipe.task]
    assert all(0 <= model["metrics"][metric] <= 1 for model in models.values())
    assert models["distilled"]["parameters"] < models["teacher"]["parameters"]
