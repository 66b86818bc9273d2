"""Data-parallel distillation with torch.distributed (2 gloo processes under torchrun on this CPU):
the same student as a single process with the same global batch and seed; a crashing rank ends
the job with a clear error, keeps the last good checkpoint, and --resume finishes it."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import TESTS, read_report, requires_torch, set_args

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
    assert (out / "checkpoints" / "distilled.pt").exists() and (out / "INCOMPLETE").exists()
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
    assert code == 2 and f"--nproc: data-parallel runs are for backend 'torch' in this version, not '{backend}'" in err
