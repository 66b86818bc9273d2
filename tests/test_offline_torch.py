"""Offline distillation on PyTorch: ``kdistill cache`` writes a trained teacher's outputs to a
soft-target store, and ``teacher.store`` trains the student from it with no teacher in memory."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import by_role, read_report, requires_torch, set_args
from test_bad_input import assert_refused

pytestmark = requires_torch
STORE_TEACHER = ("teacher.model=null",)


def teacher_of(run) -> str:
    return f"teacher.path={run / 'teacher.safetensors'}"


@pytest.fixture
def store(default_run, tmp_path, kdistill):
    path = tmp_path / "store"
    code, _, err = kdistill("cache", "--store", path, "--shard-size", 300, *set_args(teacher_of(default_run)))
    assert code == 0, err
    return path


def test_cache_writes_every_sample_of_every_split(store, default_run):
    from kdistill.data import load_task_data
    from kdistill.recipe import load_recipe
    from kdistill.store import StoreReader
    from kdistill.torch.models import load_model
    from kdistill.torch.backend import predict, tensors

    recipe = load_recipe(None, list(set_args())[1::2])
    data = load_task_data(recipe.data, recipe.task)
    reader = StoreReader(store)
    assert len(reader) == sum(len(split) for split in (data.train, data.val, data.test, data.transfer))
    teacher = load_model(default_run / "teacher.safetensors")
    expected = predict(teacher, tensors(data.test, "cpu")[0], 1024)
    np.testing.assert_allclose(reader.fetch(data.test.ids[::-1]), expected[::-1], rtol=1e-6, atol=1e-6)


def test_student_from_the_store_matches_the_online_student(store, default_run, tmp_path, kdistill):
    out = tmp_path / "offline"
    code, _, err = kdistill("run", "--out", out, *set_args(f"teacher.store={store}", *STORE_TEACHER))
    assert code == 0, err
    offline, online = by_role(read_report(out)), by_role(read_report(default_run))
    assert offline["teacher"]["parameters"] is None and offline["teacher"]["latency_ms"] is None
    assert offline["teacher"]["metrics"] == pytest.approx(online["teacher"]["metrics"], abs=1e-12)
    # the same teacher outputs (up to float32 rounding of batched matmuls), the same batches
    assert offline["distilled"]["metrics"]["accuracy"] == pytest.approx(online["distilled"]["metrics"]["accuracy"], abs=0.01)
    assert offline["scratch"]["metrics"] == online["scratch"]["metrics"]


def test_store_of_other_data_is_refused(store, tmp_path, kdistill):
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args(f"teacher.store={store}", *STORE_TEACHER, "data.limit=500")),
                   out, f"soft-target store {store} does not fit this run", "dataset fingerprint differs")


def test_top_k_store_is_refused_for_a_loss_that_reads_raw_logits(default_run, tmp_path, kdistill):
    store = tmp_path / "top3"
    assert kdistill("cache", "--store", store, "--top-k", 3, "--dtype", "float16", *set_args(teacher_of(default_run)))[0] == 0
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args(f"teacher.store={store}", *STORE_TEACHER,
                                                          "losses={mse: {}}", "weights={task: 0.5, mse: 0.5}")),
                   out, "top-3 logits", "needs dense logits")
    code, _, err = kdistill("run", "--out", tmp_path / "kd", *set_args(f"teacher.store={store}", *STORE_TEACHER))
    assert code == 0, err  # kd reads the tempered softmax: top-k targets are fine


def test_flipped_byte_in_a_shard_is_named(store, tmp_path, kdistill):
    shard = store / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert_refused(kdistill("run", "--out", out, *set_args(f"teacher.store={store}", *STORE_TEACHER)), out,
                   "shard-00001.safetensors")


def test_cache_needs_a_trained_teacher_and_store_excludes_feature_losses(tmp_path, kdistill):
    code, _, err = kdistill("cache", "--store", tmp_path / "s", *set_args())
    assert code == 2 and "teacher.path: kdistill cache needs a trained teacher" in err
    assert not (tmp_path / "s").exists()
    code, _, err = kdistill("validate", "--set", "teacher.store=x", "--set", "teacher.model=null", "--set",
                            "losses={kd: {}, hint: {}}", "--set", "weights={kd: 0.5, hint: 0.5}", "--set",
                            "features=[{student: fc1, teacher: fc1, loss: hint}]")
    assert code == 2 and "feature losses need the teacher model" in err


def test_cache_killed_by_sigkill_resumes_to_the_same_bytes(tmp_path, kdistill):
    """A `kdistill cache` subprocess SIGKILLed after its first shard, run again, equals an uninterrupted cache."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from conftest import TESTS
    from kd_factories import SlowTeacher

    torch.manual_seed(0)
    teacher_file = tmp_path / "slow.pt"
    torch.save(SlowTeacher(64, 10, seconds=0.05), teacher_file)
    args = ["cache", "--shard-size", "200", "--batch-size", "50", "--trust-pickle",
            *set_args(f"teacher.path={teacher_file}")]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "kdistill", *args, "--store", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = killed / "manifest.partial.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if partial.exists() and json.loads(partial.read_text())["shards"]:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "manifest.json").exists(), "the cache finished before it could be killed"
    assert kdistill(*args, "--store", killed)[0] == 0
    whole = tmp_path / "whole"
    assert kdistill(*args, "--store", whole)[0] == 0
    names = sorted(path.name for path in whole.iterdir())
    assert names == sorted(path.name for path in killed.iterdir())
    for name in names:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
