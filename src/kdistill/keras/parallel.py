"""Data parallelism for the Keras backend (``train.data_parallel: true``), on Keras's JAX backend.

:class:`RowParallel` is a ``keras.distribution.DataParallel`` over ``keras.distribution.list_devices()``
(a 1-D mesh): every variable (model, optimizer, metrics) is replicated on it and the rows of every
batch are sharded over it inside the jitted step, where XLA (GSPMD) inserts the all-reduce of the
gradient; the student equals the one-device student up to float summation order. Batches reach
every device whole (as the data does on kdistill's own JAX backend) and are sharded in the step
because Keras places every batch of a ``fit`` with the layout of its first batch, which an epoch's
short last batch (rows the devices do not divide) cannot take: that batch runs replicated.

The models are built before training, on one device: :func:`data_parallel` replicates their
variables for a ``fit`` and brings them back afterwards. On one CPU host,
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N devices.

TensorFlow's ``MirroredStrategy`` is refused (:func:`check_backend`): it needs every variable
created inside its scope, and it splits ``x`` (labeled + transfer rows) and ``y`` (labeled rows)
over the replicas separately, so a replica would pair transfer rows with labels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
from keras.distribution import DataParallel, TensorLayout

from kdistill.errors import KdistillError


class RowParallel(DataParallel):
    """``DataParallel`` whose batches arrive replicated and are row-sharded by :meth:`shard_rows`."""

    @property
    def size(self) -> int:
        """The number of devices."""
        return self.device_mesh.devices.size

    def get_data_layout(self, data_shape: tuple) -> TensorLayout:
        """Replicated: how Keras places a batch on the devices (every device gets all rows)."""
        return TensorLayout([None] * len(data_shape), self.device_mesh)

    def shard_rows(self, tensor: Any) -> Any:
        """``tensor`` with its rows sharded over the devices when they divide them (inside a jitted
        step: a sharding constraint), else as it is (replicated)."""
        if tensor is None or tensor.shape[0] % self.size:
            return tensor
        return keras.distribution.distribute_tensor(tensor, super().get_data_layout(tensor.shape))


def shard_batch(data: Any) -> Any:
    """Every array of a training batch ``(x, y[, sample_weight])`` row-sharded under a
    :class:`RowParallel` distribution; unchanged without one."""
    distribution = keras.distribution.distribution()
    if not isinstance(distribution, RowParallel):
        return data
    return keras.tree.map_structure(distribution.shard_rows, data)


def _state(model: keras.Model) -> list:
    """Every variable a training step of ``model`` reads: the model's, its optimizer's, its metrics'."""
    optimizer = getattr(model, "optimizer", None)
    return [*model.variables, *(optimizer.variables if optimizer else []), *model.metrics_variables]


def _replicate(variables: list, distribution: RowParallel) -> None:
    """Place each variable by the distribution's (replicated) variable layout: variables made
    before it was set live on one device."""
    for variable in variables:
        layout = distribution.get_variable_layout(variable)
        variable.assign(keras.distribution.distribute_tensor(variable.value, layout))


def _to_one_device(variables: list, models: list[keras.Model]) -> None:
    """Bring the variables back to the default device and drop the models' compiled functions:
    Keras compiles them for the distribution in force when first called."""
    for variable in variables:
        variable.assign(keras.ops.convert_to_numpy(variable.value))
    for model in models:
        model.train_function = model.test_function = model.predict_function = None


def check_backend(enabled: bool) -> None:
    """Refuse ``train.data_parallel: true`` on a Keras backend other than JAX."""
    backend = keras.backend.backend()
    if enabled and backend != "jax":
        raise KdistillError(
            f"train.data_parallel: true runs on the Keras 'jax' backend only (keras.distribution.DataParallel), "
            f"not on {backend!r}; run with KERAS_BACKEND=jax, or set train.data_parallel: false"
        )


@contextlib.contextmanager
def data_parallel(model: keras.Model, enabled: bool) -> Iterator[None]:
    """Train ``model`` inside: with ``enabled``, under :class:`RowParallel` over every device with
    the model's variables replicated. On exit the previous distribution is back and the variables
    are on one device again."""
    check_backend(enabled)
    if not enabled:
        yield
        return
    distribution = RowParallel(devices=keras.distribution.list_devices())
    variables = _state(model)
    try:
        with distribution.scope():
            _replicate(variables, distribution)
            yield
    finally:
        _to_one_device(variables, [model, *(layer for layer in model.layers if isinstance(layer, keras.Model))])
