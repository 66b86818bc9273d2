"""The JAX backend (Flax NNX + Optax): the contract of :mod:`kdistill.backends.contract` on NNX
modules. Its step is one ``jax.jit`` over split NNX state (``nnx.split`` → graphdef + arrays): it
gathers the batch from device-resident data by row indices (or takes the inputs the host read
for it: a streamed or augmented split), runs the teacher (eval mode,
``stop_gradient``) or slices the chunk of stored teacher outputs, takes the student's loss and
gradients and applies the Optax update, donating parameters, other state and optimizer state.
Dropout keys live in the model state, so they are checkpointed with it. With
``train.data_parallel`` the step's rows are sharded over a ``Mesh`` of every device and the rest
is replicated (:mod:`kdistill.jax.parallel`). The last batch of an epoch may be short, so a fit
compiles the step at most twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from kdistill.backends import REGISTRY
from kdistill.backends.contract import Backend, StepRunner
from kdistill.data.samples import Samples, is_streamed
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.jax.distiller import Distiller, eval_view, forward_with_taps, probe_shapes, tap_names, train_view
from kdistill.jax.models import build_model, count_parameters, save_model
from kdistill.jax.parallel import DataParallel
from kdistill.objective import Objective
from kdistill.recipe import FeaturePair, ModelConfig, TrainConfig
from kdistill.report.latency import BATCH_SIZES
from kdistill.training import CHECK_EVERY
from kdistill.training.plan import Step


@partial(jax.jit, static_argnums=0)
def jitted_forward(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(x)


def predict(model: nnx.Module, x: np.ndarray | jax.Array, batch_size: int) -> np.ndarray:
    """Raw outputs (logits at T = 1) in eval mode, as float64 numpy; one jitted forward per batch shape."""
    graphdef, state = nnx.split(eval_view(model))
    outputs = [jitted_forward(graphdef, state, x[start:start + batch_size]) for start in range(0, len(x), batch_size)]
    return np.asarray(jnp.concatenate(outputs), dtype=np.float64)


def make_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """adamw | adam | sgd as PyTorch defines them (Adam's and SGD's weight decay is L2 added to the
    gradient, AdamW's is decoupled) on a per-step schedule: constant, cosine to 0 over the run,
    or ×0.1 at 1/2 and 3/4 of it."""
    if config.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(config.lr, max(total_steps, 1))
    elif config.schedule == "step":
        scales: dict[int, float] = {}
        for milestone in (total_steps // 2, (3 * total_steps) // 4):
            scales[milestone] = scales.get(milestone, 1.0) * 0.1
        schedule = optax.piecewise_constant_schedule(config.lr, scales)
    else:
        schedule = optax.constant_schedule(config.lr)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay)
    update = optax.adam(schedule) if config.optimizer == "adam" else optax.sgd(schedule, momentum=config.momentum or None)
    return optax.chain(optax.add_decayed_weights(config.weight_decay), update) if config.weight_decay else update


def make_train_step(distiller: Distiller, optimizer: optax.GradientTransformation, offline: bool) -> Callable:
    """The jitted step: (params, rest, opt_state, teacher_state, data, rows, transfer_rows,
    stored, host_x) → (params, rest, opt_state, [total, *parts]); ``stored`` is None or (a chunk
    of stored teacher outputs on the device, where this step's rows start in it); ``host_x`` is
    None (the inputs are gathered from the device-resident ``data``) or the step's inputs."""
    graphdef = nnx.graphdef(train_view(distiller.trainee))
    teacher = None if offline else distiller.teacher
    teacher_graph = nnx.graphdef(eval_view(teacher)) if isinstance(teacher, nnx.Module) else None

    def step(params, rest, opt_state, teacher_state, data, rows, transfer_rows, stored, host_x):
        x_train, y_train, x_transfer = data
        y = y_train[rows]
        if host_x is not None:  # the step's inputs read on the host (labeled rows, then transfer rows)
            x = host_x
        else:
            x = x_train[rows] if transfer_rows is None else jnp.concatenate([x_train[rows], x_transfer[transfer_rows]])
        teacher_out = None if stored is None else jax.lax.dynamic_slice_in_dim(stored[0], stored[1], x.shape[0])
        frozen = teacher if teacher_graph is None else nnx.merge(teacher_graph, teacher_state)  # module or function
        trainee = nnx.merge(graphdef, params, rest)
        loss = nnx.value_and_grad(lambda trainee: distiller(trainee, frozen, x, y, teacher_out), has_aux=True)
        (total, parts), grads = loss(trainee)  # dropout streams advance in trainee
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), nnx.state(trainee, nnx.Not(nnx.Param)), opt_state,
                jnp.stack([total, *(parts[name] for name in distiller.objective.parts)]))  # jit returns dicts key-sorted

    return jax.jit(step, donate_argnums=(0, 1, 2))


def _key_data(leaf: jax.Array) -> jax.Array:
    """Typed PRNG keys (dropout streams) as raw uint32 data, so a checkpoint holds plain arrays."""
    return jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf


def on_device(x: np.ndarray | Samples) -> jax.Array | None:
    """A split's inputs on the default device when in memory (streamed ones come per step)."""
    return None if is_streamed(x) else jnp.asarray(x)


class JaxRunner(StepRunner):
    """The jitted step over device-resident splits, or over the host inputs each step carries (a
    streamed or augmented split); state: parameters, other NNX state (dropout
    keys, batch statistics) and the Optax state, as arrays named by their tree paths."""

    def __init__(self, distiller: Distiller, data: TaskData, config: TrainConfig, total_steps: int, transfer: bool,
                 device: jax.Device):
        self.distiller, self.device = distiller, device
        self.names = ["total", *distiller.objective.parts]
        self.device_data = (on_device(data.train.x), jnp.asarray(data.train.y),
                            on_device(data.transfer.x) if transfer else None)
        self.capacity = CHECK_EVERY * config.batch_size * (2 if transfer else 1)
        self.optimizer = make_optimizer(config, total_steps)
        offline = distiller.teacher is None and distiller.objective.distills
        self.train_step = make_train_step(distiller, self.optimizer, offline)
        _, params, rest = nnx.split(distiller.trainee, nnx.Param, ...)
        self.state_tree = {"params": params, "rest": rest, "opt": self.optimizer.init(params)}
        teacher = distiller.teacher
        self.teacher_state = nnx.state(teacher) if isinstance(teacher, nnx.Module) and not offline else None
        self.parallel = DataParallel() if config.data_parallel else None
        if self.parallel is not None:  # everything but the batch rows lives whole on every device
            self.device_data, self.teacher_state = self.parallel.replicate((self.device_data, self.teacher_state))
            self.state_tree = self.parallel.replicate(self.state_tree)

    def _rows(self, rows: np.ndarray | None) -> jax.Array | None:
        """Row indices or a step's host inputs on the device (sharded by rows under data parallelism)."""
        if rows is None:
            return None
        return jnp.asarray(rows) if self.parallel is None else self.parallel.rows(rows)

    def run(self, steps: Sequence[Step], teacher_outputs: np.ndarray | None) -> list[jax.Array]:
        stored = starts = None
        if teacher_outputs is not None:  # one copy for the chunk, padded so the step compiles once for it
            padded = np.zeros((self.capacity, *teacher_outputs.shape[1:]), np.float32)
            padded[:len(teacher_outputs)] = teacher_outputs
            stored = jnp.asarray(padded)
            starts = np.cumsum([0, *(step.size for step in steps[:-1])]).astype(np.int32)
        recorded, state = [], self.state_tree
        for index, step in enumerate(steps):
            state["params"], state["rest"], state["opt"], losses = self.train_step(
                state["params"], state["rest"], state["opt"], self.teacher_state, self.device_data,
                self._rows(step.rows), self._rows(step.transfer_rows),
                None if stored is None else (stored, starts[index]), self._rows(step.x))
            recorded.append(losses)
        return recorded

    def losses(self, pending: list[jax.Array]) -> np.ndarray:
        return np.asarray(jnp.stack(pending), dtype=np.float64)

    def state(self) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_flatten_with_path(self.state_tree)[0]
        return {jax.tree_util.keystr(path): np.asarray(_key_data(leaf)) for path, leaf in leaves}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        leaves, treedef = jax.tree_util.tree_flatten_with_path(self.state_tree)
        restored = []
        for path, leaf in leaves:
            array = jnp.asarray(arrays[jax.tree_util.keystr(path)])
            restored.append(jax.random.wrap_key_data(array, impl=jax.random.key_impl(leaf))
                            if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else array)
        self.state_tree = jax.tree_util.tree_unflatten(treedef, restored)
        if self.parallel is not None:
            self.state_tree = self.parallel.replicate(self.state_tree)

    def finish(self) -> None:
        nnx.update(self.distiller.trainee, self.state_tree["params"], self.state_tree["rest"])


class JaxBackend(Backend):
    info = REGISTRY["jax"]

    def device(self, name: str) -> jax.Device:
        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        if name == "cuda" and not gpus:
            raise KdistillError("train.device: 'cuda' requested but jax sees no GPU (use 'auto' or 'cpu'; "
                                "GPU needs pip install 'jax[cuda12]')")
        return gpus[0] if gpus and name != "cpu" else jax.devices("cpu")[0]

    def environment(self, device: jax.Device, config: TrainConfig) -> dict[str, Any]:
        return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__, "device": str(device),
                "data_parallel_devices": len(jax.devices()) if config.data_parallel else 1}

    def scope(self, device: jax.Device, config: TrainConfig) -> contextlib.AbstractContextManager:
        return jax.default_device(device)

    def build(self, config: ModelConfig, data: TaskData, field: str, seed: int,
              device: jax.Device) -> tuple[nnx.Module, dict]:
        with jax.default_device(device):
            return build_model(config, data, field, seed)

    def output_shape(self, model: nnx.Module, probe: np.ndarray, device: jax.Device) -> tuple[int, ...]:
        return tuple(probe_shapes(model, jnp.asarray(probe))[0].shape[1:])  # abstract evaluation: nothing compiled

    def save(self, model: nnx.Module, spec: dict, stem: Path) -> Path:
        return save_model(model, spec, stem)

    def clone(self, model: nnx.Module, spec: dict, data: TaskData, probe: np.ndarray, device: jax.Device) -> nnx.Module:
        graphdef, state = nnx.split(model)  # own buffers: training donates the original's
        return nnx.merge(graphdef, jax.tree.map(lambda array: array.copy(), state))

    def count_parameters(self, model: nnx.Module) -> int:
        return count_parameters(model)

    def predict_array(self, model: nnx.Module, x: np.ndarray, batch_size: int, device: jax.Device) -> np.ndarray:
        with jax.default_device(device):
            return predict(model, jnp.asarray(x), batch_size)

    def embed_array(self, model: nnx.Module, x: np.ndarray, path: str, batch_size: int,
                    device: jax.Device) -> np.ndarray:
        taps, view = tap_names(model, [path], "compare.embedding"), eval_view(model)
        with jax.default_device(device):
            rows = [np.asarray(forward_with_taps(view, jnp.asarray(x[start:start + batch_size]), taps)[1][path])
                    for start in range(0, len(x), batch_size)]
        return np.concatenate(rows).reshape(len(x), -1).astype(np.float64)

    def timed_forward(self, model: nnx.Module, x: np.ndarray, device: jax.Device) -> Callable[[int], None]:
        graphdef, state = nnx.split(eval_view(model))
        x = jnp.asarray(x)
        batches = {size: x[jnp.arange(size) % len(x)] for size in BATCH_SIZES}

        def forward(size: int) -> None:
            jitted_forward(graphdef, state, batches[size]).block_until_ready()
        return forward

    def frozen_forward(self, model: nnx.Module, device: jax.Device) -> Callable[[np.ndarray], np.ndarray]:
        """One jitted eval-mode forward per batch shape on ``device`` (set in the calling thread:
        JAX's default device is per thread); the host batch goes in uncommitted, so arrays
        replicated over a data-parallel mesh stay where they are."""
        graphdef, state = nnx.split(eval_view(model))

        def forward(x: np.ndarray) -> np.ndarray:
            with jax.default_device(device):
                return np.asarray(jitted_forward(graphdef, state, x), np.float32)
        return forward

    def set_trainable(self, model: nnx.Module, trainable: bool) -> None:
        """Nothing to switch: a teacher runs through ``eval_view`` under ``stop_gradient``."""

    def dlpack_forward(self, model: nnx.Module, device: jax.Device) -> Callable[[Any], jax.Array]:
        """``x -> logits`` for any array that speaks DLPack (a torch tensor, say), taken without a
        copy where the device allows; one jitted eval-mode forward per batch shape."""
        graphdef, state = nnx.split(eval_view(model))
        return lambda x: jitted_forward(graphdef, state, jnp.from_dlpack(x))

    def distiller(self, student: nnx.Module, objective: Objective, teacher: nnx.Module | None,
                  features: Sequence[FeaturePair], probe: np.ndarray | None, device: jax.Device,
                  seed: int) -> Distiller:
        with jax.default_device(device):
            return Distiller(student, objective.task, objective.weights, objective.losses, teacher=teacher,
                             features=features, probe=None if probe is None else jnp.asarray(probe),
                             offline=teacher is None, seed=seed, heads=objective.heads)

    def runner(self, distiller: Distiller, data: TaskData, config: TrainConfig, total_steps: int, transfer: bool,
               device: jax.Device) -> JaxRunner:
        with jax.default_device(device):
            return JaxRunner(distiller, data, config, total_steps, transfer, device)

    def export(self, model: nnx.Module, format: str, path: Path, example: np.ndarray, quantize: str | None = None) -> None:
        from kdistill.jax.export import export

        export(model, format, path, example, quantize)

    def student(self, distiller: Distiller) -> nnx.Module:
        return distiller.student


BACKEND = JaxBackend()
