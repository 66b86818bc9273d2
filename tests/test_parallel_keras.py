"""Keras data parallelism (``train.data_parallel``): on the Keras JAX backend, a ``DataParallel``
over 2 CPU devices — variables replicated, batch rows sharded in the step — gives the one-device
student; on the TensorFlow backend, a ``MirroredStrategy`` over 2 logical CPUs does too; the torch
Keras backend is refused. Keras fixes its backend at import, JAX its device count at start and
TensorFlow its logical devices before first use, so every run happens in a subprocess."""

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
from kdistill.keras import backend, parallel

out, settings = sys.argv[1], sys.argv[2:]
placements, rows = [], {}
predict, shard_rows = backend.predict, parallel.RowParallel.shard_rows

def spy_predict(model, x, batch_size):  # the validation metric, at the end of every training epoch
    if keras.distribution.distribution() is not None:
        sharding = model.variables[0].value.sharding
        placements.append([len(sharding.device_set), sharding.is_fully_replicated])
    return predict(model, x, batch_size)

def spy_shard_rows(self, tensor):  # while the train step is traced, once per batch shape
    sharded = shard_rows(self, tensor)
    if tensor is not None:  # train_on_batch's batch is (x, y, sample_weight=None)
        rows[tensor.shape[0]] = sharded is not tensor
    return sharded

backend.predict, parallel.RowParallel.shard_rows = spy_predict, spy_shard_rows  # BACKEND.predict calls predict
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


TF_SCRIPT = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]  # 2 logical CPUs, before anything else touches TensorFlow
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import json, sys
import keras, numpy as np
from kdistill.cli import main
from kdistill.keras import distiller, parallel
from kdistill.training import checkpoint

out, settings = sys.argv[1], sys.argv[2:]
replicas, parts, losses = [], {}, {}
gather_rows, replica_batches, save = distiller.gather_rows, parallel.replica_batches, checkpoint.save

def spy_gather_rows(labeled, tensors):  # traced once per replica in each step function
    context = tf.distribute.get_replica_context()
    replicas.append(context.num_replicas_in_sync)
    return gather_rows(labeled, tensors)

def spy_replica_batches(make_batches, count):  # (rows, labeled rows) of every per-replica batch
    generate = replica_batches(make_batches, count)
    def spied():
        for x, y in generate():
            parts[f"{len(x['inputs'])}/{len(y)}"] = count
            yield x, y
    return spied

def spy_save(stem, arrays, epoch, history):  # after every epoch of every role: its mean training loss
    save(stem, arrays, epoch, history)
    losses.setdefault(stem.name, []).append(history.loss[-1]["total"])

distiller.gather_rows, parallel.replica_batches, checkpoint.save = spy_gather_rows, spy_replica_batches, spy_save
assert main(["run", "--out", out + "/one", *settings]) == 0
assert not replicas and not parts
one_losses, losses = losses, {}
assert main(["run", "--out", out + "/two", *settings, "--set", "train.data_parallel=true"]) == 0
weights = {name: [keras.models.load_model(f"{out}/{run}/{name}.keras").get_weights() for run in ("one", "two")]
           for name in ("teacher", "student")}
print(json.dumps({
    "replicas": replicas, "strategy": parallel.mirrored_strategy().num_replicas_in_sync, "parts": parts,
    "max_diff": {name: max(float(np.abs(a - b).max()) for a, b in zip(*pair)) for name, pair in weights.items()},
    "loss_diff": max(abs(a - b) for role in one_losses for a, b in zip(one_losses[role], losses[role])),
    "epochs": {role: len(values) for role, values in losses.items()},
}))
"""


def test_two_logical_cpus_give_the_one_device_student_on_keras_tensorflow(tmp_path):
    pytest.importorskip("tensorflow")
    result = subprocess.run(
        [sys.executable, "-c", TF_SCRIPT, str(tmp_path), *set_args("backend=keras", "compare.scratch=false")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(TESTS), "KERAS_BACKEND": "tensorflow"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["strategy"] == 2
    # the loss of the whole batch, gathered in the steps of teacher and student, traced once per replica
    assert set(facts["replicas"]) == {2} and len(facts["replicas"]) >= 4, facts["replicas"]
    # teacher: 64 labeled rows a step, the last step 3; student: 64 labeled + 64 transfer rows, the last
    # 3 + 64: each replica gets its half of the labeled and of the transfer rows (uneven when odd)
    assert facts["parts"] == {"32/32": 2, "2/2": 2, "1/1": 2, "64/32": 2, "34/2": 2, "33/1": 2}
    assert facts["epochs"] == {"teacher": 2, "distilled": 2}
    # up to float summation order (measured: teacher 2.9e-7, student 7.5e-8); the teacher trains with
    # dropout, whose mask is the one-device mask
    assert facts["max_diff"]["teacher"] < 1e-5, facts["max_diff"]
    assert facts["max_diff"]["student"] < 1e-5, facts["max_diff"]
    assert facts["loss_diff"] < 1e-5, facts["loss_diff"]


def test_data_parallel_is_refused_on_the_torch_keras_backend(tmp_path):
    pytest.importorskip("torch")
    result = subprocess.run(
        [sys.executable, "-m", "kdistill", "run", "--out", str(tmp_path / "out"),
         *set_args("backend=keras", "train.data_parallel=true")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(TESTS), "KERAS_BACKEND": "torch"},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert ("kdistill: error: train.data_parallel: true runs on the Keras 'jax' backend (keras.distribution."
            "DataParallel) and the 'tensorflow' backend (tf.distribute.MirroredStrategy), not on 'torch'") in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything is written
