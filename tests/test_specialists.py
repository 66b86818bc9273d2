"""Specialists (Hinton et al. 2015 §5): specialist data with a dustbin class, the merge with a
generalist, and a student distilled from the merged store through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from conftest import by_role, read_report, requires_torch, set_args
from kdistill.data import load_task_data
from kdistill.errors import KdistillError
from kdistill.recipe import load_recipe
from kdistill.store import StoreReader
from kdistill.store.specialists import merge_specialists

SUBSETS = [[1, 2, 3], [3, 4]]


def _dustbin_projection(p: np.ndarray, classes: list[int]) -> np.ndarray:
    """p over all classes → p over ``classes`` plus the dustbin (the rest)."""
    return np.append(p[classes], 1.0 - p[classes].sum())


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


def _merged_by_definition(p_general: np.ndarray, p_specialists: list[np.ndarray], active: list[bool]) -> np.ndarray:
    """argmin_q KL(p_g‖q) + Σ_active KL(p_m‖Π_m q) for one sample, written from the definition and
    solved with numerical gradients: independent of the analytic gradient under test."""
    def objective(z):
        q = softmax(z)
        return _kl(p_general, q) + sum(_kl(p, _dustbin_projection(q, classes))
                                       for p, classes, on in zip(p_specialists, SUBSETS, active) if on)
    return softmax(minimize(objective, np.log(p_general), method="BFGS", options={"gtol": 1e-10}).x)


def _logits(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, shape)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_merge_matches_the_definition_for_active_specialists(temperature):
    generalist = _logits(0, (6, 5))
    generalist[:, 3] += 8.0  # class 3 on top: both specialists are active
    specialists = [_logits(1, (6, 4)), _logits(2, (6, 3))]
    merged = merge_specialists(generalist, specialists, SUBSETS, temperature=temperature)
    q = softmax(merged.astype(np.float64) / temperature, axis=1)
    for row in range(6):
        expected = _merged_by_definition(softmax(generalist[row] / temperature),
                                         [softmax(s[row] / temperature) for s in specialists], [True, True])
        np.testing.assert_allclose(q[row], expected, atol=2e-5)


def test_a_sample_without_active_specialists_keeps_the_generalist():
    generalist = _logits(3, (4, 5)) / 2
    generalist[:, 0] += 6.0  # class 0 on top: no specialist covers it
    merged = merge_specialists(generalist, [_logits(4, (4, 4)), _logits(5, (4, 3))], SUBSETS)
    np.testing.assert_allclose(merged, log_softmax(generalist, axis=1), atol=1e-5)


def test_top_n_activates_specialists_of_lower_ranked_classes():
    generalist = np.array([[5.0, 0.0, 0.0, 4.0, -1.0]])  # top-1 class 0 (no specialist), top-2 adds 3
    specialist = [np.array([[0.0, 0.0, 6.0, -2.0]])]  # very sure of class 3 among {1, 2, 3}
    alone = merge_specialists(generalist, specialist, SUBSETS[:1], top_n=1)
    with_top2 = merge_specialists(generalist, specialist, SUBSETS[:1], top_n=2)
    np.testing.assert_allclose(alone, log_softmax(generalist, axis=1), atol=1e-5)
    assert softmax(with_top2, axis=1)[0, 3] > softmax(generalist, axis=1)[0, 3]


def test_a_specialist_that_agrees_with_the_generalist_changes_nothing():
    generalist = _logits(6, (5, 5))
    generalist[:, 2] += 5.0
    p = softmax(generalist, axis=1)
    agreeing = np.log(np.stack([_dustbin_projection(row, SUBSETS[0]) for row in p]))
    merged = merge_specialists(generalist, [agreeing], SUBSETS[:1])
    np.testing.assert_allclose(softmax(merged, axis=1), p, atol=1e-5)


@pytest.mark.parametrize("classes, needle", [
    ([4, 12], "data.classes: \\[4, 12\\] — classes must lie in 0..9"),
    ([3, 3], "at least 2 distinct classes"),
    (list(range(10)), "leave at least one class to the dustbin"),
])
def test_bad_specialist_classes_are_named(classes, needle):
    recipe = load_recipe(None, [f"data.classes={classes}"])
    with pytest.raises(KdistillError, match=needle):
        load_task_data(recipe.data, recipe.task)


def test_specialist_data_maps_its_classes_and_sends_the_rest_to_the_dustbin():
    full = load_task_data(load_recipe(None).data, "classification")
    special = load_task_data(load_recipe(None, ["data.classes=[3, 5, 8]"]).data, "classification")
    assert special.output_dim == 4
    for split, labels in ((full.train, special.train), (full.test, special.test)):
        np.testing.assert_array_equal(split.ids, labels.ids)
        expected = np.select([split.y == 3, split.y == 5, split.y == 8], [0, 1, 2], default=3)
        np.testing.assert_array_equal(labels.y, expected)
    np.testing.assert_array_equal(full.transfer.ids, special.transfer.ids)
    assert special.meta["specialist"] == {"classes": [3, 5, 8], "all_classes_fingerprint": full.fingerprint()}


@requires_torch
def test_student_distills_from_a_generalist_merged_with_specialists(tmp_path, kdistill):
    """Black-box generalist and specialist predictions → stores → merged store → a student run."""
    full = load_task_data(load_recipe(None).data, "classification")
    splits = [split for split in (full.train, full.val, full.test, full.transfer) if split is not None]
    labels = np.concatenate([split.y if split.y is not None else np.zeros(len(split), int) for split in splits])
    rng = np.random.default_rng(0)
    generalist = rng.normal(0, 1, (len(labels), 10)) + 3.0 * np.eye(10)[labels]
    specialist = rng.normal(0, 1, (len(labels), 4))
    np.save(tmp_path / "generalist.npy", generalist)
    np.save(tmp_path / "specialist.npy", specialist)
    assert kdistill("cache", "--store", tmp_path / "g", "--from-predictions", tmp_path / "generalist.npy")[0] == 0
    assert kdistill("cache", "--store", tmp_path / "s", "--from-predictions", tmp_path / "specialist.npy",
                    "--set", "data.classes=[3, 5, 8]")[0] == 0
    assert StoreReader(tmp_path / "s").manifest.teacher["classes"] == [3, 5, 8]

    code, _, err = kdistill("cache", "--store", tmp_path / "bad", "--ensemble", tmp_path / "s", tmp_path / "g",
                            "--combine", "specialists")
    assert code == 2 and "is not a specialist's store" in err and not (tmp_path / "bad" / "manifest.json").exists()
    assert kdistill("cache", "--store", tmp_path / "m", "--ensemble", tmp_path / "g", tmp_path / "s",
                    "--combine", "specialists", "--top-n", "2")[0] == 0
    merged = StoreReader(tmp_path / "m")
    assert merged.manifest.num_classes == 10 and merged.manifest.teacher["classes"] == [[3, 5, 8]]
    assert merged.manifest.dataset_fingerprint == full.fingerprint()

    out = tmp_path / "run"
    code, _, err = kdistill("run", "--out", out, *set_args(f"teacher.store={tmp_path / 'm'}", "teacher.model=null"))
    assert code == 0, err
    roles = by_role(read_report(out))
    assert {"teacher", "member 1: g", "distilled", "scratch"} == set(roles)  # the specialist is not scored on 10 classes
