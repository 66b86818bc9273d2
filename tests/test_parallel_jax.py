"""JAX data parallelism (``train.data_parallel``): a Mesh over 2 CPU devices, batch rows sharded,
parameters replicated — the same student as one device. The device count is fixed when JAX starts,
so the runs happen in a subprocess with ``--xla_force_host_platform_device_count=2``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import TESTS, set_args

pytest.importorskip("flax")

SCRIPT = """
import json, sys
import jax, numpy as np
from safetensors.numpy import load_file
from kdistill.cli import main
from kdistill.jax.parallel import DataParallel

out, settings = sys.argv[1], sys.argv[2:]
parallel = DataParallel()
sharded, uneven = parallel.rows(np.arange(6)), parallel.rows(np.arange(5))
assert main(["run", "--out", out + "/one", *settings]) == 0
assert main(["run", "--out", out + "/two", *settings, "--set", "train.data_parallel=true"]) == 0
one, two = load_file(out + "/one/student.safetensors"), load_file(out + "/two/student.safetensors")
print(json.dumps({
    "devices": len(jax.devices()),
    "sharded_devices": len(sharded.sharding.device_set), "sharded_spec": str(sharded.sharding.spec),
    "uneven_replicated": uneven.sharding.is_fully_replicated,
    "max_diff": max(float(np.abs(one[k] - two[k]).max()) for k in one),
    "report_devices": json.load(open(out + "/two/report.json"))["environment"]["data_parallel_devices"],
}))
"""


def test_two_cpu_devices_give_the_one_device_student(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONPATH": str(TESTS)}
    settings = set_args("backend=jax", "train.batch_size=60")  # the teacher (with dropout) trains sharded too
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), *settings], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["devices"] == 2 and facts["report_devices"] == 2
    assert facts["sharded_devices"] == 2 and facts["sharded_spec"] in ("P('data',)", "PartitionSpec('data',)")
    assert facts["uneven_replicated"]  # a short last batch the devices do not divide runs replicated
    assert facts["max_diff"] < 1e-5  # up to float summation order


def test_data_parallel_is_refused_for_torch():
    from kdistill.errors import KdistillError
    from kdistill.recipe import load_recipe

    # torch has no one-process data parallelism: it shards over processes instead
    with pytest.raises(KdistillError, match=r"train.data_parallel: 'torch' runs data-parallel as processes \(kdistill run --nproc N\); sharding over one process's devices is for backend\(s\) keras, jax"):
        load_recipe(None, ["train.data_parallel=true"])
