"""Data parallelism for the Keras backend (``train.data_parallel: true``), on Keras's JAX and
TensorFlow backends; the student equals the one-device student up to float summation order.

JAX: :class:`RowParallel` is a ``keras.distribution.DataParallel`` over
``keras.distribution.list_devices()`` (a 1-D mesh): every variable (model, optimizer, metrics) is
replicated on it and the rows of every batch are sharded over it inside the jitted step, where XLA
(GSPMD) inserts the all-reduce of the gradient. Batches reach every device whole (as the data does
on kdistill's own JAX backend) and are sharded in the step because Keras places every batch of a
``fit`` with the layout of its first batch, which an epoch's short last batch (rows the devices do
not divide) cannot take: that batch runs replicated. The models are built before training, on one
device: :func:`data_parallel` replicates their variables for a ``fit`` and brings them back
afterwards. On one CPU host, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes N devices.

TensorFlow: ``tf.distribute.MirroredStrategy`` (:func:`mirrored_strategy`) over every logical GPU,
else every logical CPU. It mirrors only variables made inside its scope, so every model,
distiller and optimizer is made in :func:`build_scope`. Each batch is split by kdistill, not by
TensorFlow (:func:`distributed_batches`): replica r gets the r-th part of the labeled rows and
the r-th part of the transfer rows, so parts may be uneven (an epoch's short last batch) or empty.
In the step each replica runs the models on its rows, then :func:`gather_rows` all-gathers the
outputs into the one-device batch and every replica computes the loss of the whole batch, divided
by the replica count (the optimizer sums the replicas' gradients): losses over the batch (``dist``,
the ranking task) and uneven parts come out as on one device. Dropout draws the whole batch's mask
and keeps the replica's rows (:func:`_global_dropout`); other random layers draw per replica. On
one CPU, ``tf.config.set_logical_device_configuration`` before TensorFlow starts makes N devices.

The torch Keras backend is refused (:func:`check_backend`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
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
    """Refuse ``train.data_parallel: true`` on the torch Keras backend."""
    backend = keras.backend.backend()
    if enabled and backend not in ("jax", "tensorflow"):
        raise KdistillError(
            f"train.data_parallel: true runs on the Keras 'jax' backend (keras.distribution.DataParallel) and the "
            f"'tensorflow' backend (tf.distribute.MirroredStrategy), not on {backend!r}; run with KERAS_BACKEND=jax "
            "or tensorflow, or set train.data_parallel: false"
        )


@contextlib.contextmanager
def data_parallel(model: keras.Model, enabled: bool) -> Iterator[None]:
    """Train ``model`` inside. With ``enabled`` on JAX: under :class:`RowParallel` over every device
    with the model's variables replicated; on exit the previous distribution is back and the
    variables are on one device again. On TensorFlow: in the :func:`mirrored_strategy` scope (the
    model must have been made in :func:`build_scope`), with :func:`_global_dropout`."""
    check_backend(enabled)
    if not enabled:
        yield
        return
    if keras.backend.backend() == "tensorflow":
        with _mirrored(model):
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


# --- TensorFlow: tf.distribute.MirroredStrategy -------------------------------------------------


@functools.cache
def mirrored_strategy() -> Any:
    """The process's ``tf.distribute.MirroredStrategy`` over every logical GPU, else every logical
    CPU (``tf.config.set_logical_device_configuration`` splits one CPU into several)."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def build_scope(enabled: bool) -> contextlib.AbstractContextManager:
    """Where models, distillers and optimizers are made: with ``enabled`` on Keras's TensorFlow
    backend, the :func:`mirrored_strategy` scope (MirroredStrategy mirrors only the variables made
    inside it); elsewhere nothing."""
    check_backend(enabled)
    if enabled and keras.backend.backend() == "tensorflow":
        return mirrored_strategy().scope()
    return contextlib.nullcontext()


def replicas() -> int:
    """How many replicas run the current step in sync: above 1 only inside a MirroredStrategy step."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def gather_rows(labeled: Any, tensors: list) -> list:
    """Inside a MirroredStrategy step, each of ``tensors`` (this replica's rows: ``labeled``
    labeled rows, then its transfer rows) as the whole batch holds it: every replica's labeled
    rows in replica order, then every replica's transfer rows, which is the one-device batch
    (:func:`replica_batches` splits it so). Differentiable: the gradient reaching a replica's rows
    is summed over the replicas (``ReplicaContext.all_gather``). One all-gather of all rows, then
    slices in order (an all-gather whose every part is empty crashes TensorFlow)."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    rows = tf.shape(tensors[0])[0]
    counts = context.all_gather(tf.reshape(tf.stack([tf.cast(labeled, tf.int32), rows]), (1, 2)), axis=0)
    starts = tf.cumsum(counts[:, 1], exclusive=True)
    bounds = [(starts[r], starts[r] + counts[r, 0], starts[r] + counts[r, 1]) for r in range(context.num_replicas_in_sync)]
    gathered = []
    for tensor, whole in zip(tensors, context.all_gather(list(tensors), axis=0)):
        # slices, not tf.gather: the gradient must stay dense for the all-gather's all-reduce
        rows = tf.concat([whole[start:middle] for start, middle, _ in bounds]
                         + [whole[middle:end] for _, middle, end in bounds], axis=0)
        rows.set_shape([None, *tensor.shape[1:]])  # the static sizes the losses read (all_gather drops them)
        gathered.append(rows)
    return gathered


def replica_batches(make_batches: Callable[[], Iterator[tuple[dict, np.ndarray]]], count: int) -> Callable[[], Iterator]:
    """A generator function yielding, for every batch ``(x, y)`` of ``make_batches()`` (x: the
    ``len(y)`` labeled rows, then the transfer rows), ``count`` consecutive per-replica batches:
    replica r gets the r-th contiguous part of the labeled rows followed by the r-th part of the
    transfer rows (parts as equal as can be, the first ones a row longer), so each keeps the
    Distiller's "first len(y) rows are labeled" and :func:`gather_rows` restores the batch."""
    def generate() -> Iterator[tuple[dict, np.ndarray]]:
        for x, y in make_batches():
            labeled, rows = len(y), len(x["inputs"])
            heads = np.array_split(np.arange(labeled), count)
            tails = np.array_split(np.arange(labeled, rows), count)
            for head, tail in zip(heads, tails):
                picked = np.concatenate([head, tail])
                yield {name: value[picked] for name, value in x.items()}, y[head]
    return generate


def distributed_batches(make_batches: Callable[[], Iterator[tuple[dict, np.ndarray]]]) -> Any:
    """``make_batches()``'s batches as a distributed dataset of :func:`mirrored_strategy`, split
    over its replicas by :func:`replica_batches` (each new iterator starts again at the first
    batch: Keras draws one batch to build the model, then iterates afresh)."""
    import tensorflow as tf

    strategy = mirrored_strategy()
    count = strategy.num_replicas_in_sync
    x, y = next(iter(make_batches()))

    def spec(array: np.ndarray) -> Any:
        return tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype))

    signature = ({name: spec(value) for name, value in x.items()}, spec(y))
    dataset = tf.data.Dataset.from_generator(replica_batches(make_batches, count), output_signature=signature)
    # one input pipeline: its consecutive elements go to replicas 0, 1, ... of each step
    return strategy.distribute_datasets_from_function(lambda context: dataset)


def _global_dropout(original: Callable) -> Callable:
    """Keras's TensorFlow dropout, which inside a MirroredStrategy step draws the keep mask of the
    whole batch (every replica's rows, from the same seed) and keeps this replica's rows of it: the
    one-device mask. Elsewhere, or with a mask shared by every row, the original."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import random as tf_random

    def dropout(inputs: Any, rate: float, noise_shape: Any = None, seed: Any = None) -> Any:
        context = tf.distribute.get_replica_context()
        if (rate in (0.0, 1.0) or context is None or context.num_replicas_in_sync == 1
                or (noise_shape is not None and noise_shape[0] is not None)):
            return original(inputs, rate, noise_shape=noise_shape, seed=seed)
        seed = tf_random._cast_seed(tf_random.draw_seed(seed))
        rows = tf.shape(inputs)[:1]
        counts = context.all_gather(rows, axis=0)
        start = tf.reduce_sum(counts[:context.replica_id_in_sync_group])

        def sampler(shape: Any, dtype: Any) -> Any:
            shape = tf.concat([tf.reduce_sum(counts, keepdims=True), tf.cast(shape, tf.int32)[1:]], axis=0)
            return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)[start:start + rows[0]]

        shape = tf_random._get_concrete_noise_shape(inputs, noise_shape)
        return tf.nn.experimental.general_dropout(inputs, rate, sampler, noise_shape=shape)

    return dropout


@contextlib.contextmanager
def _mirrored(model: keras.Model) -> Iterator[None]:
    from keras.src.backend.tensorflow import random as tf_random

    strategy = mirrored_strategy()
    if getattr(model, "_distribute_strategy", None) is not strategy:
        raise KdistillError(
            f"train.data_parallel: {model.name!r} was built outside the MirroredStrategy scope; build models, "
            "distillers and optimizers inside kdistill.keras.parallel.build_scope(True)"
        )
    original = tf_random.dropout
    tf_random.dropout = _global_dropout(original)
    try:
        with strategy.scope():
            yield
    finally:
        tf_random.dropout = original
