"""Augmentation views: seeded views, a store that caches K of them, and training that replays the
exact view the cached teacher output belongs to (Beyer et al. 2022's consistent teaching)."""

from __future__ import annotations

import copy

import itertools

import numpy as np
import pytest

from conftest import FAST, default_raw, requires_torch
from kdistill.data import load_task_data
from kdistill.data.augment import augment, view_ids
from kdistill.errors import KdistillError
from kdistill.recipe import AugmentConfig, load_recipe, recipe_from_dict
from kdistill.store import StoreReader, StoreWriter
from kdistill.store.for_run import open_store_for

SHIFT_FLIP = AugmentConfig(shift=2, flip=True, seed=5)


def _images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 2, 7, 9)).astype(np.float32)


def _shifted(image: np.ndarray, dy: int, dx: int, flip: bool) -> np.ndarray:
    """out[r, c] = image[r + dy, (W−1−c if flip else c) + dx], zero outside the image: written
    pixel by pixel, independent of the vectorised code under test."""
    height, width = image.shape[1:]
    out = np.zeros_like(image)
    for r, c in itertools.product(range(height), range(width)):
        source_r, source_c = r + dy, (width - 1 - c if flip else c) + dx
        if 0 <= source_r < height and 0 <= source_c < width:
            out[:, r, c] = image[:, source_r, source_c]
    return out


def test_every_view_is_a_translation_and_flip_within_range_and_view_0_is_the_sample():
    x, ids = _images(), np.arange(10, 16)
    np.testing.assert_array_equal(augment(x, ids, np.zeros(6, dtype=np.int64), SHIFT_FLIP), x)
    candidates = list(itertools.product(range(-2, 3), range(-2, 3), (False, True)))
    seen = set()
    for view in range(1, 9):
        out = augment(x, ids, np.full(6, view), SHIFT_FLIP)
        for row in range(6):
            matches = [c for c in candidates if np.array_equal(out[row], _shifted(x[row], *c))]
            assert matches, f"view {view} of sample {ids[row]} is no translation/flip of it"
            seen.add(matches[0])
    assert len(seen) > 10 and any(flip for _, _, flip in seen)  # the draws spread over the choices


def test_a_view_is_the_same_pixels_every_time_and_depends_on_id_view_and_seed():
    x, ids = _images(), np.arange(6)
    views = np.array([1, 2, 3, 1, 2, 3])
    first = augment(x, ids, views, SHIFT_FLIP)
    np.testing.assert_array_equal(first, augment(x.copy(), ids, views, SHIFT_FLIP))
    np.testing.assert_array_equal(first[2:3], augment(x[2:3], ids[2:3], views[2:3], SHIFT_FLIP))  # batch-independent
    assert not np.array_equal(first, augment(x, ids, views + 3, SHIFT_FLIP))
    assert not np.array_equal(first, augment(x, ids, views, SHIFT_FLIP.model_copy(update={"seed": 6})))


def test_view_ids_replay_the_cached_views_or_draw_fresh_ones_online():
    ids = np.arange(1000)
    cached = view_ids(0, 3, ids, 4)
    assert cached.min() == 1 and cached.max() == 4 and len(np.unique(cached)) == 4
    np.testing.assert_array_equal(cached, view_ids(0, 3, ids, 4))
    assert not np.array_equal(cached, view_ids(0, 4, ids, 4))  # another epoch, other views
    online = view_ids(0, 3, ids, None)
    assert online.min() >= 1 and len(np.unique(online)) == len(ids)


def test_augmentation_needs_image_inputs_and_does_something():
    recipe = load_recipe(None, ["data.augment={shift: 1}"])  # digits: flat 64-feature rows
    with pytest.raises(KdistillError, match=r"data.augment: shift and flip need image inputs .* shaped \(64,\)"):
        load_task_data(recipe.data, recipe.task)
    with pytest.raises(KdistillError, match="data.augment: set shift > 0 and/or flip"):
        load_recipe(None, ["data.augment={seed: 3}"])


@pytest.mark.parametrize("k", [None, 2])
def test_store_with_views_returns_the_requested_view_of_each_sample(tmp_path, k):
    ids = np.arange(100, 130)
    logits = np.random.default_rng(1).normal(size=(30, 4, 5)).astype(np.float32)  # 3 views + the sample
    writer = StoreWriter(tmp_path / "s", ids=ids, num_classes=5, teacher={}, dataset_fingerprint="d", k=k,
                         views=3, augment=SHIFT_FLIP.model_dump(), shard_size=7)
    writer.write(ids, logits)
    writer.close()
    reader = StoreReader(tmp_path / "s")
    order = np.random.default_rng(2).permutation(30)
    views = np.random.default_rng(3).integers(0, 4, 30)
    fetched, default = reader.fetch(ids[order], views), reader.fetch(ids[order])
    if k is None:
        np.testing.assert_array_equal(fetched, logits[order, views])
        np.testing.assert_array_equal(default, logits[order, 0])
    else:  # the kept top-2 logits of the requested view, exactly
        np.testing.assert_array_equal(np.sort(fetched, axis=1)[:, -2:], np.sort(logits[order, views], axis=1)[:, -2:])
    with pytest.raises(KdistillError, match="views must be one per sample in 0..3"):
        reader.fetch(ids[:2], np.array([0, 4]))
    with pytest.raises(KdistillError, match="holds no augmentation views"):
        StoreReader(_plain_store(tmp_path / "plain", ids)).check(augment=SHIFT_FLIP.model_dump())
    with pytest.raises(KdistillError, match="its views were cached with augmentation"):
        reader.check(augment=SHIFT_FLIP.model_copy(update={"seed": 1}).model_dump())


def _plain_store(path, ids):
    writer = StoreWriter(path, ids=ids, num_classes=5, teacher={}, dataset_fingerprint="d", shard_size=64)
    writer.write(ids, np.zeros((len(ids), 5), dtype=np.float32))
    writer.close()
    return path


@requires_torch
def test_training_replays_the_cached_view_the_student_sees(tmp_path, image_arrays):
    """Every teacher output read from a K-view store during training equals the teacher run on the
    exact (augmented) inputs the student got in that step."""
    import torch

    from kdistill.pipeline import Pipeline
    from kdistill.torch.cache import cache_teacher
    from kdistill.torch.models import build_model, save_model
    from kdistill.training.loop import fit

    raw = default_raw() | {
        "data": {"dataset": "arrays", "path": str(image_arrays), "transfer": {"fraction": 0.3},
                 "augment": {"shift": 1, "flip": True, "seed": 2}},
        "teacher": {"model": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}},
        "student": {"model": "cnn", "kwargs": {"channels": [2, 4], "hidden": 8}},
    }
    recipe = recipe_from_dict(raw, FAST)
    data = load_task_data(recipe.data, recipe.task)
    torch.manual_seed(0)
    teacher, spec = build_model(recipe.teacher, data, "teacher")
    teacher_file = save_model(teacher.eval(), spec, tmp_path / "teacher")
    cached = recipe_from_dict(raw, [*FAST, f"teacher.path={teacher_file}"])
    cache_teacher(cached, data, tmp_path / "store", views=3, shard_size=50)

    store_recipe = recipe_from_dict(raw, [*FAST, "teacher.model=null", f"teacher.store={tmp_path / 'store'}",
                                          "compare.scratch=false"])
    pipeline, store = Pipeline(store_recipe, data), open_store_for(store_recipe, data)
    steps = []
    original_forward = pipeline.distiller.forward

    def recording_forward(x, y, teacher_out=None, share=None):
        steps.append((x.detach().clone(), copy.deepcopy(teacher_out)))  # logits, or soft targets
        return original_forward(x, y, teacher_out, share)

    pipeline.distiller.forward = recording_forward
    fit("distilled", pipeline.backend, pipeline.distiller, data, store_recipe.train, torch.device("cpu"),
        teacher_outputs=store.fetch, augment=store_recipe.data.augment, stored_views=store.manifest.views)
    assert len(steps) >= 4
    with torch.no_grad():
        for x, teacher_out in steps:
            torch.testing.assert_close(pipeline.distiller.teacher_side(teacher(x), [len(x)])[0], teacher_out, rtol=1e-5, atol=1e-5)
    batches = torch.cat([x for x, _ in steps])
    plain = torch.from_numpy(np.concatenate([data.train.x, data.transfer.x]))
    unchanged = sum(any(torch.equal(row, plain_row) for plain_row in plain) for row in batches[:20])
    assert unchanged < 5  # the student saw augmented views (a draw of shift 0, no flip leaves a sample as it is)


@requires_torch
def test_cli_online_then_cached_views_then_a_store_without_views_is_refused(tmp_path, image_arrays, kdistill):
    from conftest import read_report, set_args, write_recipe

    raw = default_raw() | {
        "data": {"dataset": "arrays", "path": str(image_arrays), "transfer": {"fraction": 0.3},
                 "augment": {"shift": 1, "flip": True}},
        "teacher": {"model": "cnn", "kwargs": {"channels": [4, 8], "hidden": 16}},
        "student": {"model": "cnn", "kwargs": {"channels": [2, 4], "hidden": 8}},
    }
    recipe = write_recipe(tmp_path / "augment.yaml", raw)
    code, _, err = kdistill("run", recipe, "--out", tmp_path / "online", *set_args())
    assert code == 0, err
    teacher = f"teacher.path={tmp_path / 'online' / 'teacher.safetensors'}"
    assert kdistill("cache", recipe, "--store", tmp_path / "views", "--views", 2, *set_args(teacher))[0] == 0
    assert StoreReader(tmp_path / "views").manifest.views == 2
    from_store = ("teacher.model=null", f"teacher.store={tmp_path / 'views'}")
    code, _, err = kdistill("run", recipe, "--out", tmp_path / "offline", *set_args(*from_store))
    assert code == 0, err
    assert {model["role"] for model in read_report(tmp_path / "offline")["models"]} == {"teacher", "distilled", "scratch"}

    assert kdistill("cache", recipe, "--store", tmp_path / "plain", *set_args(teacher))[0] == 0
    code, _, err = kdistill("run", recipe, "--out", tmp_path / "refused",
                            *set_args("teacher.model=null", f"teacher.store={tmp_path / 'plain'}"))
    assert code == 2 and "holds no augmentation views" in err and not (tmp_path / "refused").exists()
