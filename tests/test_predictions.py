"""Black-box teachers: prediction files imported into a store with ``kdistill cache --from-predictions``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from conftest import by_role, read_report, requires_torch, set_args
from kdistill.data import load_task_data
from kdistill.recipe import load_recipe
from kdistill.store import StoreReader


@pytest.fixture
def samples():
    """The default recipe's data and its sample ids in cache order, with made-up teacher logits."""
    data = load_task_data(load_recipe(None).data, "classification")
    ids = np.concatenate([split.ids for split in (data.train, data.val, data.test, data.transfer)])
    logits = np.random.default_rng(0).normal(0, 3, (len(ids), data.output_dim))
    return data, ids, logits


def write_csv(path, ids, values):
    header = "id," + ",".join(f"c{index}" for index in range(values.shape[1]))
    np.savetxt(path, np.column_stack([ids, values]), delimiter=",", header=header, comments="", fmt="%.9g")
    return path


def test_csv_with_shuffled_ids_lands_on_the_right_samples(samples, tmp_path, kdistill):
    data, ids, logits = samples
    order = np.random.default_rng(1).permutation(len(ids))
    file = write_csv(tmp_path / "mystery.csv", ids[order], logits[order])
    code, _, err = kdistill("cache", "--from-predictions", file, "--store", tmp_path / "s")
    assert code == 0, err
    row_of = {int(sample_id): row for row, sample_id in enumerate(ids)}
    expected = logits[[row_of[int(sample_id)] for sample_id in data.test.ids]]
    np.testing.assert_allclose(StoreReader(tmp_path / "s").fetch(data.test.ids), expected, rtol=1e-6)


def test_probabilities_in_row_order_round_trip_through_softmax(samples, tmp_path, kdistill):
    _, ids, logits = samples
    probs = softmax(logits, axis=1)
    probs[0] = np.eye(probs.shape[1])[3]  # a one-hot row: zeros must stay finite
    np.save(tmp_path / "probs.npy", probs)
    code, _, err = kdistill("cache", "--from-predictions", tmp_path / "probs.npy", "--kind", "probs", "--store", tmp_path / "s")
    assert code == 0, err
    stored = StoreReader(tmp_path / "s").fetch(ids)
    assert np.isfinite(stored).all()
    np.testing.assert_allclose(softmax(stored.astype(np.float64), axis=1), probs, atol=1e-6)


@pytest.mark.parametrize("problem, needle", [
    ("rows", "has 10 rows and no 'id' column, but the recipe's data has 1797 samples"),
    ("missing", "has no prediction for 1 of 1797 sample ids"),
    ("probs", "kind 'probs' but row 0"),
    ("classes", "has 7 classes, the data has 10"),
])
def test_bad_prediction_files_are_named(samples, tmp_path, kdistill, problem, needle):
    _, ids, logits = samples
    file, kind = tmp_path / "p.npz", "logits"
    if problem == "rows":
        np.savez(file, predictions=logits[:10])
    elif problem == "missing":
        np.savez(file, predictions=logits[1:], ids=ids[1:])
    elif problem == "probs":
        np.savez(file, predictions=np.abs(logits))
        kind = "probs"
    else:
        np.savez(file, predictions=logits[:, :7])
    code, _, err = kdistill("cache", "--from-predictions", file, "--kind", kind, "--store", tmp_path / "s")
    assert code == 2 and needle in err, err
    assert not (tmp_path / "s" / "manifest.json").exists()


@requires_torch
def test_student_trains_from_a_black_box_store(samples, tmp_path, kdistill, default_run):
    """The mystery model: only its answers (here, a trained teacher's test-set-and-all logits) are known."""
    import torch

    from kdistill.torch.models import load_model

    data, ids, _ = samples
    teacher = load_model(default_run / "teacher.safetensors").eval()
    x = np.concatenate([split.x for split in (data.train, data.val, data.test, data.transfer)])
    with torch.no_grad():
        answers = teacher(torch.from_numpy(x)).numpy()
    np.save(tmp_path / "answers.npy", softmax(answers.astype(np.float64), axis=1))
    assert kdistill("cache", "--from-predictions", tmp_path / "answers.npy", "--kind", "probs", "--store", tmp_path / "s")[0] == 0
    soft_ce = ("losses={soft_ce: {temperature: 1}}", "weights={task: 0.5, soft_ce: 0.5}")
    runs = {"box": (f"teacher.store={tmp_path / 's'}", "teacher.model=null"),
            "online": (f"teacher.path={default_run / 'teacher.safetensors'}",)}
    for name, teacher_args in runs.items():
        code, _, err = kdistill("run", "--out", tmp_path / name, *set_args(*teacher_args, *soft_ce))
        assert code == 0, err
    box, online = by_role(read_report(tmp_path / "box")), by_role(read_report(tmp_path / "online"))
    assert box["teacher"]["metrics"]["accuracy"] == pytest.approx(online["teacher"]["metrics"]["accuracy"], abs=1e-9)
    # the answers alone teach what the model itself teaches (float rounding of log p aside)
    assert box["distilled"]["metrics"]["accuracy"] == pytest.approx(online["distilled"]["metrics"]["accuracy"], abs=0.01)
    assert box["distilled"]["agreement"] == pytest.approx(online["distilled"]["agreement"], abs=0.01)
