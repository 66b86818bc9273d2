"""Keras data parallelism (``train.data_parallel``): on the Keras JAX backend, a ``DataParallel``
over 2 CPU devices — variables replicated, batch rows sharded in the step — gives the one-device
student; the other Keras backends are refused. Keras fixes its backend at import and JAX its
device count at start, so every run happens in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import TESTS, set_args

pytest.importorskip("keras")
pytest.importorskip("jax")

SCRIPT = """
import json, sys
import keras, numpy as np
from kdistill.cli import main
from kdistill.keras import parallel, trainer

out, settings = sys.argv[1], sys.argv[2:]
placements, rows = [], {}
predict, shard_rows = trainer.predict, parallel.RowParallel.shard_rows

def spy_predict(model, x, batch_size):  # the validation metric, at the end of every training epoch
    if keras.distribution.distribution() is not None:
        sharding = model.variables[0].value.sharding
        placements.append([len(sharding.device_set), sharding.is_fully_replicated])
    return predict(model, x, batch_size)

def spy_shard_rows(self, tensor):  # while the train step is traced, once per batch shape
    sharded = shard_rows(self, tensor)
    rows[tensor.shape[0]] = sharded is not tensor
    return sharded

trainer.predict, parallel.RowParallel.shard_rows = spy_predict, spy_shard_rows
assert main(["run", "--out", out + "/one", *settings]) == 0
assert not placements and not rows
assert main(["run", "--out", out + "/two", *settings, "--set", "train.data_parallel=true"]) == 0
students = [keras.models.load_model(f"{out}/{run}/student.keras").get_weights() for run in ("one", "two")]
print(json.dumps({
    "devices": len(keras.distribution.list_devices()), "placements": placements, "rows": rows,
    "distribution_after": repr(keras.distribution.distribution()),
    "max_diff": max(float(np.abs(a - b).max()) for a, b in zip(*students)),
}))
"""


def run_script(tmp_path, env: dict, *settings: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), *settings], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(TESTS), **env}, timeout=600)


def test_two_cpu_devices_give_the_one_device_student_on_keras_jax(tmp_path):
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = run_script(tmp_path, env, *set_args("backend=keras", "compare.scratch=false"))
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["devices"] == 2
    # teacher (with dropout) and student, 2 epochs each: variables replicated on both devices while training
    assert facts["placements"] == [[2, True]] * 4
    # 64 labeled + 64 transfer rows sharded; the last step's 3 labeled + 64 transfer rows run replicated
    assert facts["rows"] == {"128": True, "64": True, "67": False, "3": False}
    assert facts["distribution_after"] == "None"
    assert facts["max_diff"] < 1e-4, facts["max_diff"]  # up to float summation order (measured: about 1e-5)


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_data_parallel_is_refused_on_the_other_keras_backends(tmp_path, backend):
    pytest.importorskip(backend)
    result = subprocess.run(
        [sys.executable, "-m", "kdistill", "run", "--out", str(tmp_path / "out"),
         *set_args("backend=keras", "train.data_parallel=true")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(TESTS), "KERAS_BACKEND": backend},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert (f"kdistill: error: train.data_parallel: true runs on the Keras 'jax' backend only "
            f"(keras.distribution.DataParallel), not on {backend!r}") in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything is written
