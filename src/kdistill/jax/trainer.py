"""The JAX training loop shared by teacher, distilled student and scratch twin: one jitted step.

The step is ``jax.jit`` over split NNX state (``nnx.split`` → graphdef + arrays): it gathers the
batch from device-resident data by row indices, runs the teacher (eval mode, ``stop_gradient``),
takes the student's loss and gradients, and applies the Optax update; parameters, other state
and optimizer state are donated. The host reads the losses every ``CHECK_EVERY`` steps, one chunk
late (the device is already running the next chunk, so it rarely waits), to check they are finite;
a divergence still names its exact step. Batches follow :func:`kdistill.training.epoch_plan`, which depends
only on ``(seed, epoch)``; dropout keys live in the model state. So a run resumed from the Orbax
checkpoint written after every epoch (atomically: a step directory appears whole or not at all)
continues exactly as an uninterrupted one.

Shapes: the last batch of an epoch may be short, so a fit compiles the step at most twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.jax.distiller import Distiller, eval_view, train_view
from kdistill.jax.parallel import DataParallel
from kdistill.progress import epoch_progress
from kdistill.recipe import TrainConfig
from kdistill.report.metrics import PRIMARY, task_metrics
from kdistill.training import CHECK_EVERY, EpochPlan, History, check_finite, epoch_plan


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
    stored) → (params, rest, opt_state, [total, *parts]); ``stored`` is None or (a chunk of stored
    teacher outputs on the device, where this step's rows start in it)."""
    graphdef = nnx.graphdef(train_view(distiller.trainee))
    teacher = None if offline else distiller.teacher
    teacher_graph = nnx.graphdef(eval_view(teacher)) if isinstance(teacher, nnx.Module) else None

    def step(params, rest, opt_state, teacher_state, data, rows, transfer_rows, stored):
        x_train, y_train, x_transfer = data
        x, y = x_train[rows], y_train[rows]
        if transfer_rows is not None:
            x = jnp.concatenate([x, x_transfer[transfer_rows]])
        teacher_out = None if stored is None else jax.lax.dynamic_slice_in_dim(stored[0], stored[1], x.shape[0])
        frozen = teacher if teacher_graph is None else nnx.merge(teacher_graph, teacher_state)  # module or function
        trainee = nnx.merge(graphdef, params, rest)
        loss = nnx.value_and_grad(lambda trainee: distiller(trainee, frozen, x, y, teacher_out), has_aux=True)
        (total, parts), grads = loss(trainee)  # dropout streams advance in trainee
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), nnx.state(trainee, nnx.Not(nnx.Param)), opt_state,
                jnp.stack([total, *parts.values()]))

    return jax.jit(step, donate_argnums=(0, 1, 2))


def _key_data(tree):
    """Typed PRNG keys (dropout streams) as raw uint32 data, so a checkpoint holds plain arrays."""
    return jax.tree.map(lambda a: jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a, tree)


class Checkpoint:
    """One Orbax checkpoint directory per fit, step = epoch, the latest kept: the training state as
    a flat list of arrays (compared with this run's own on restore) and the history as JSON."""

    def __init__(self, directory: Path, role: str):
        self.role, self.directory = role, directory
        options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, create=True)
        self.manager = ocp.CheckpointManager(directory.absolute(), options=options, item_names=("state", "history"))

    def save(self, epoch: int, state, history: History) -> None:
        arrays = {f"{index:05d}": np.asarray(leaf) for index, leaf in enumerate(jax.tree.leaves(_key_data(state)))}
        self.manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                                         history=ocp.args.JsonSave(asdict(history))))
        self.manager.wait_until_finished()

    def history(self) -> History | None:
        """The history saved with the latest checkpoint, or None if there is none."""
        epoch = self.manager.latest_step()
        if epoch is None:
            return None
        return History(**self.manager.restore(epoch, args=ocp.args.Composite(history=ocp.args.JsonRestore())).history)

    def restore(self, state) -> tuple[int, object, History] | None:
        """(epoch, state, history) of the latest checkpoint, or None if there is none."""
        epoch = self.manager.latest_step()
        if epoch is None:
            return None
        restored = self.manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                       history=ocp.args.JsonRestore()))
        leaves, treedef = jax.tree.flatten(state)
        stored = [restored.state[name] for name in sorted(restored.state)]
        expected = [np.asarray(leaf) for leaf in jax.tree.leaves(_key_data(state))]
        if len(stored) != len(expected) or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(stored, expected)):
            raise KdistillError(
                f"--resume: {self.directory} does not fit this recipe's {self.role} model (resume with the recipe of "
                "the interrupted run, or start afresh in another --out)"
            )
        leaves = [jax.random.wrap_key_data(jnp.asarray(array), impl=jax.random.key_impl(leaf))
                  if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else jnp.asarray(array)
                  for leaf, array in zip(leaves, stored)]
        return epoch, jax.tree.unflatten(treedef, leaves), History(**restored.history)


class _LossLog:
    """One epoch's losses: rows ``[total, *parts]`` per step on the device, and the same rows on
    the host once checked to be finite."""

    def __init__(self, role: str, epoch: int, names: list[str], kept: Path | None, progress):
        self.role, self.epoch, self.names, self.kept, self.progress = role, epoch, names, kept, progress
        self.recorded: list[jax.Array] = []
        self.checked: list[np.ndarray] = []

    def check(self, upto: int) -> None:
        """Check steps len(checked) to ``upto`` − 1 (raises TrainingDiverged at a non-finite one)."""
        if upto > len(self.checked):
            recent = np.asarray(jnp.stack(self.recorded[len(self.checked):upto]))
            check_finite(self.role, self.epoch, upto - 1, recent, self.names, self.kept)
            self.checked.extend(recent)
            self.progress.step(self.epoch, upto, loss=float(recent[-1][0]))


def _stored_outputs(plan: EpochPlan, data: TaskData, fetch: Callable[[np.ndarray], np.ndarray], first: int,
                    last: int) -> tuple[jax.Array, list[np.int32]]:
    """The stored teacher outputs of steps ``first`` to ``last`` − 1, read in one ``fetch`` and
    moved to the device at once (a store read or a host-to-device copy per step costs more than a
    small student's step), zero-padded to a fixed number of rows so the jitted step compiles once
    for it; and where each step's rows start."""
    batches = []
    for step in range(first, last):
        rows, transfer_rows = plan.batch(step)
        batches.append(data.train.ids[rows] if transfer_rows is None
                       else np.concatenate([data.train.ids[rows], data.transfer.ids[transfer_rows]]))
    outputs = fetch(np.concatenate(batches))
    capacity = CHECK_EVERY * plan.batch_size * (1 if plan.transfer_order is None else 2)
    padded = np.zeros((capacity, *outputs.shape[1:]), outputs.dtype)
    padded[:len(outputs)] = outputs
    return jnp.asarray(padded), [np.int32(start) for start in np.cumsum([0, *map(len, batches[:-1])])]


def fit(role: str, distiller: Distiller, data: TaskData, config: TrainConfig, checkpoint: Path | None = None,
        resume: bool = False, teacher_outputs: Callable[[np.ndarray], np.ndarray] | None = None) -> History:
    """Train ``distiller``'s student (and adapters) for ``config.epochs``; returns the history and
    leaves the trained arrays in ``distiller.trainee``.

    Each step takes ``batch_size`` labeled samples and, when the data has a transfer set and the
    distiller has distillation terms, ``batch_size`` unlabeled ones for those terms (a teacher or
    scratch twin, trained on labels alone, never sees them). Offline, ``teacher_outputs`` maps the
    batch's sample ids to the teacher's outputs (a soft-target store's ``fetch``)."""
    with_transfer = data.transfer is not None and bool(distiller.losses)
    device_data = (jnp.asarray(data.train.x), jnp.asarray(data.train.y),
                   jnp.asarray(data.transfer.x) if with_transfer else None)
    x_val = jnp.asarray(data.val.x)
    parallel = DataParallel() if config.data_parallel else None
    place_rows = jnp.asarray if parallel is None else parallel.rows
    n_transfer = len(data.transfer) if with_transfer else None
    steps = epoch_plan(config.seed, 0, len(data.train), n_transfer, config.batch_size).steps
    optimizer = make_optimizer(config, steps * config.epochs)
    offline = teacher_outputs is not None
    train_step = make_train_step(distiller, optimizer, offline)
    _, params, rest = nnx.split(distiller.trainee, nnx.Param, ...)
    state = {"params": params, "rest": rest, "opt": optimizer.init(params)}
    teacher_state = nnx.state(distiller.teacher) if isinstance(distiller.teacher, nnx.Module) and not offline else None
    history, start_epoch = History(metric=PRIMARY[data.task]), 0
    store = Checkpoint(checkpoint, role) if checkpoint is not None else None
    if resume and store is not None and (restored := store.restore(state)) is not None:
        last_epoch, state, history = restored
        start_epoch = last_epoch + 1
    if parallel is not None:  # everything but the batch rows lives whole on every device
        device_data, state, teacher_state = parallel.replicate((device_data, state, teacher_state))

    with epoch_progress(role, config.epochs, steps, enabled=config.progress) as progress:
        progress.skip(start_epoch)
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            plan = epoch_plan(config.seed, epoch, len(data.train), n_transfer, config.batch_size)
            kept = None if store is None or store.manager.latest_step() is None else checkpoint  # for a divergence
            log = _LossLog(role, epoch, distiller.part_names, kept, progress)
            for step in range(plan.steps):
                rows, transfer_rows = plan.batch(step)
                if offline and step % CHECK_EVERY == 0:
                    chunk, starts = _stored_outputs(plan, data, teacher_outputs, step, min(step + CHECK_EVERY, plan.steps))
                stored = (chunk, starts[step % CHECK_EVERY]) if offline else None
                state["params"], state["rest"], state["opt"], losses = train_step(
                    state["params"], state["rest"], state["opt"], teacher_state, device_data,
                    place_rows(rows), None if transfer_rows is None else place_rows(transfer_rows), stored)
                log.recorded.append(losses)
                if (step + 1) % CHECK_EVERY == 0:
                    log.check(step + 1 - CHECK_EVERY)  # the previous chunk: done by now, while this one runs
            log.check(plan.steps)
            nnx.update(distiller.trainee, state["params"], state["rest"])
            history.train_seconds += time.perf_counter() - started
            means = np.mean(log.checked, axis=0).tolist()
            history.loss.append(dict(zip(["total", *distiller.part_names], means)))
            history.val.append(task_metrics(data.task, predict(distiller.student, x_val, config.eval_batch_size),
                                            data.val.y)[history.metric])
            progress.end_epoch(epoch, means[0], **{history.metric: history.val[-1]})
            if store is not None:
                store.save(epoch, state, history)
    nnx.update(distiller.trainee, state["params"], state["rest"])
    return history
