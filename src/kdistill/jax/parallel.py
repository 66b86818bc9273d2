"""Data parallelism on JAX's own engine: ``jax.sharding`` (``train.data_parallel: true``).

A 1-D ``Mesh`` over ``jax.devices()`` named ``data``: the rows of every batch are sharded over it
with ``NamedSharding(mesh, P("data"))``; parameters, optimizer state, the frozen teacher and the
device-resident data are replicated. The jitted step is the same: XLA (GSPMD) partitions the
gathered batch along the rows and inserts the all-reduce of the gradient mean, so the student
equals the one-device student up to float summation order. A batch whose row count the devices
do not divide (an epoch's short last batch) runs replicated.

Several hosts: call ``jax.distributed.initialize()`` in every process before kdistill (JAX then
lists every host's devices in ``jax.devices()``) and start the same command on each host. On
one CPU host, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


class DataParallel:
    """Where arrays live on the mesh: ``replicate`` for state, ``rows`` for a batch's row indices
    and host inputs."""

    def __init__(self, devices: list[jax.Device] | None = None) -> None:
        self.mesh = Mesh(np.array(devices or jax.devices()), ("data",))
        self.size = self.mesh.size
        self._replicated = NamedSharding(self.mesh, P())
        self._sharded = NamedSharding(self.mesh, P("data"))

    def replicate(self, tree: Any) -> Any:
        return jax.device_put(tree, self._replicated)

    def rows(self, rows: np.ndarray) -> jax.Array:
        """A batch's row indices (or inputs), sharded by rows over the devices when they divide
        the batch, else replicated."""
        return jax.device_put(rows, self._sharded if len(rows) % self.size == 0 else self._replicated)
