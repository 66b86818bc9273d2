"""Data-parallel distillation with torch.distributed (2 gloo processes under torchrun on this CPU):
the same student as a single process with the same global batch and seed; a crashing rank ends
the job with a clear error, keeps the last good checkpoint, and --resume finishes it."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import TESTS, read_report, requires_torch, set_args
from kdistill.data import load_task_data
from kdistill.training import checkpoint

pytestmark = requires_torch

STUDENT = ("student.model=kd_factories:crash_on_rank", "student.kwargs={steps: 7}", "train.batch_size=64",
           "compare.scratch=false")


def test_two_processes_crash_resume_and_match_one_process(tmp_path, kdistill, default_run, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the torchrun processes import kd_factories too
    settings = set_args(f"teacher.path={default_run / 'teacher.safetensors'}", *STUDENT)
    code, _, err = kdistill("run", "--out", tmp_path / "one", *settings)
    assert code == 0, err

    out = tmp_path / "two"
    monkeypatch.setenv("KDISTILL_TEST_CRASH_RANK", "1")  # rank 1 fails in step 3 of epoch 2 (5 steps per epoch)
    code, _, err = kdistill("run", "--nproc", 2, "--out", out, *settings)
    assert code == 2 and "--nproc 2: a process of the job failed" in err and "--resume" in err
    assert (out / "checkpoints" / "distilled.ckpt.safetensors").exists() and (out / "INCOMPLETE").exists()
    assert checkpoint.load(out / "checkpoints" / "distilled", "distilled")[1] == 0  # epoch 1 kept; epoch 2 crashed
    assert not (out / "report.json").exists()

    monkeypatch.delenv("KDISTILL_TEST_CRASH_RANK")
    code, _, err = kdistill("run", "--nproc", 2, "--out", out, "--resume", *settings)
    assert code == 0, err
    assert not (out / "INCOMPLETE").exists() and read_report(out)["environment"]["backend"] == "torch"
    single, parallel = load_file(tmp_path / "one" / "student.safetensors"), load_file(out / "student.safetensors")
    assert single.keys() == parallel.keys()
    for name in single:  # equal up to float summation order
        np.testing.assert_allclose(parallel[name], single[name], rtol=0, atol=1e-6, err_msg=name)


def test_a_last_batch_smaller_than_the_process_count_is_refused_before_launch(tmp_path, kdistill, default_run):
    """259 labeled digits in batches of 129 leave a last batch of 1 for 2 processes."""
    settings = set_args(f"teacher.path={default_run / 'teacher.safetensors'}", "train.batch_size=129")
    code, _, err = kdistill("run", "--nproc", 2, "--out", tmp_path / "run", *settings)
    assert code == 2 and "train.batch_size: 129 leaves a last batch of 1 sample(s) per epoch, fewer than the 2" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("backend", ["jax", "keras"])
def test_other_backends_are_refused_by_nproc(tmp_path, kdistill, backend):
    code, _, err = kdistill("run", "--nproc", 2, "--out", tmp_path / "run", *set_args(f"backend={backend}"))
    assert code == 2 and f"--nproc: runs of several processes are for backend(s) torch, not '{backend}'" in err
    assert not (tmp_path / "run").exists()


def test_cache_on_two_processes_survives_a_crash_and_equals_one_process_byte_for_byte(tmp_path, kdistill,
                                                                                        monkeypatch):
    """Each rank writes its own shards; a rank that dies part-way is finished by running the cache
    again; the joined store has the bytes (manifest included) of a one-process cache."""
    import torch

    from kdistill.recipe import load_recipe
    from kdistill.torch.models import build_model, save_model

    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    recipe = load_recipe(None, ["teacher.model=kd_factories:crash_on_rank", "teacher.kwargs={steps: 3, count_eval: true}"])
    torch.manual_seed(0)
    data = load_task_data(recipe.data, recipe.task)
    teacher_file = save_model(build_model(recipe.teacher, data, "teacher")[0].eval(),
                              build_model(recipe.teacher, data, "teacher")[1], tmp_path / "teacher")
    cache = ("--shard-size", 200, "--batch-size", 100, "--set", f"teacher.path={teacher_file}",
             "--set", "teacher.model=kd_factories:crash_on_rank")  # the recipe trusts the sidecar's import path
    assert kdistill("cache", "--store", tmp_path / "one", *cache)[0] == 0

    monkeypatch.setenv("KDISTILL_TEST_CRASH_RANK", "1")  # rank 1 dies in its 4th batch, after its first shard
    code, _, err = kdistill("cache", "--nproc", 2, "--store", tmp_path / "two", *cache)
    assert code == 2 and "a process of the job failed" in err and "finished shards are kept" in err
    assert not (tmp_path / "two" / "manifest.json").exists()
    assert list((tmp_path / "two" / "part-001").glob("shard-*.safetensors"))  # its finished shard survived

    monkeypatch.delenv("KDISTILL_TEST_CRASH_RANK")
    assert kdistill("cache", "--nproc", 2, "--store", tmp_path / "two", *cache)[0] == 0
    one = {path.name: path.read_bytes() for path in (tmp_path / "one").iterdir()}
    two = {path.name: path.read_bytes() for path in (tmp_path / "two").iterdir()}
    assert one == two and len(one) == 1 + 9  # manifest + ceil(1797 / 200) shards; the parts are gone
