"""JAX distillation: kdistill's jitted distiller against a minimal hand-written NNX + Optax loop.

Ratios from variants measured side by side (interleaved rounds, medians), on Fashion-MNIST:

(a) kdistill online-KD epoch ÷ hand-written online-KD epoch. Both train the same student (same
    initial parameters) under the same frozen teacher, on the same batches (``epoch_plan``), with
    AdamW at a constant lr and the loss 0.1·CE + 0.9·T²·KL(p_t^T ‖ p_s^T). The hand-written loop is
    what a careful user writes: ``nnx.split`` once, one ``jax.jit`` step with donated buffers that
    gathers the batch from device-resident arrays (arguments, not
    constants baked into the program), the teacher under ``stop_gradient``, ``optax.adamw``; no checks,
    no loss parts, no validation. Target ≤ 1.05.
(b) kdistill offline-KD epoch ÷ kdistill plain-student epoch: the teacher's logits read from a
    soft-target store once per chunk of 20 steps (``StoreReader.fetch``) against the task loss alone.

An epoch's time excludes compilation: each variant trains ``--epochs`` epochs and the first is
left out (it compiles the step, twice with a short last batch); "compile" is the first epoch's
time minus the median of the others. kdistill's epochs are the loop's own figures
(``History.epoch_seconds``, the one loop of :mod:`kdistill.training.loop` on the JAX backend),
which exclude the validation pass after every epoch.

    python benchmarks/jax_kd.py --limit 20000 --rounds 3 --epochs 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from kdistill.data import load_task_data
from kdistill.jax.backend import BACKEND
from kdistill.jax.distiller import eval_view, train_view
from kdistill.objective import Objective
from kdistill.recipe import load_recipe
from kdistill.report.metrics import task_metrics
from kdistill.store import StoreReader
from kdistill.store.predictions import cache_predictions
from kdistill.teacher import probe_rows
from kdistill.training.loop import fit
from kdistill.training.plan import epoch_plan

T, WEIGHTS = 4.0, {"task": 0.1, "kd": 0.9}
TASK = "classification"


def kdistill_epochs(role: str, student: nnx.Module, objective: Objective, teacher: nnx.Module | None, data, config,
                    device, teacher_outputs=None) -> list[float]:
    """Seconds of each epoch of kdistill's loop training ``student`` (validation excluded)."""
    distiller = BACKEND.distiller(student, objective, teacher, (), None, device, config.seed)
    return fit(role, BACKEND, distiller, data, config, device, teacher_outputs=teacher_outputs).epoch_seconds


def handwritten_epochs(student: nnx.Module, teacher: nnx.Module, data, config) -> list[float]:
    """The minimal loop; trains ``student`` in place and returns the seconds of each epoch."""
    graphdef, params, rest = nnx.split(train_view(student), nnx.Param, ...)
    teacher_graph, teacher_state = nnx.split(eval_view(teacher))
    optimizer = optax.adamw(config.lr, weight_decay=config.weight_decay)
    opt_state = optimizer.init(params)
    x_train, y_train = jnp.asarray(data.train.x), jnp.asarray(data.train.y)

    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, rest, opt_state, teacher_state, x_train, y_train, rows):
        x, y = x_train[rows], y_train[rows]
        t = jax.lax.stop_gradient(nnx.merge(teacher_graph, teacher_state)(x))
        model = nnx.merge(graphdef, params, rest)

        def loss(model):
            s = model(x)
            ce = optax.softmax_cross_entropy_with_integer_labels(s, y).mean()
            log_pt, log_ps = jax.nn.log_softmax(t / T), jax.nn.log_softmax(s / T)
            kl = T**2 * jnp.mean(jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1))
            return WEIGHTS["task"] * ce + WEIGHTS["kd"] * kl

        value, grads = nnx.value_and_grad(loss)(model)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), nnx.state(model, nnx.Not(nnx.Param)), opt_state, value

    seconds = []
    for epoch in range(config.epochs):
        started = time.perf_counter()
        plan = epoch_plan(config.seed, epoch, len(data.train), None, config.batch_size)
        for index in range(plan.steps):
            params, rest, opt_state, value = step(params, rest, opt_state, teacher_state, x_train, y_train,
                                                 jnp.asarray(plan.batch(index)[0]))
        value.block_until_ready()
        seconds.append(time.perf_counter() - started)
    nnx.update(student, params, rest)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant per round (the first compiles)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    overrides = [f"data.limit={args.limit}", "data.transfer=null", "backend=jax", f"train.epochs={args.epochs}",
                 "train.progress=false", "train.device=cpu", f"train.batch_size={args.batch_size}",
                 "train.schedule=constant", "teacher.kwargs={hidden: [1200, 1200]}", "student.kwargs={hidden: [64]}",
                 f"losses={{kd: {{temperature: {T}}}}}", "weights={task: 0.1, kd: 0.9}", "teacher.train={epochs: 2}"]
    recipe = load_recipe("fashion_mnist_mlp", overrides)
    data = load_task_data(recipe.data, recipe.task)
    device, probe = BACKEND.device(recipe.train.device), probe_rows(data)
    teacher, _ = BACKEND.build(recipe.teacher, data, "teacher", 0, device)
    kdistill_epochs("teacher", teacher, Objective.task_only(TASK), None, data, recipe.teacher_training(), device)
    student, spec = BACKEND.build(recipe.student, data, "student", 1, device)
    work = Path(tempfile.mkdtemp(prefix="kdistill-jax-"))
    splits = (data.train, data.val, data.test)
    np.savez(work / "teacher.npz", ids=np.concatenate([split.ids for split in splits]),
             predictions=np.concatenate([BACKEND.predict(teacher, split.x, 1024, device) for split in splits]))
    cache_predictions(data, work / "teacher.npz", "logits", work / "store")
    reader = StoreReader(work / "store")
    kd = Objective(TASK, WEIGHTS, {"kd": {"temperature": T}})

    def copied() -> nnx.Module:  # the same initial parameters, in buffers of its own (training donates them)
        return BACKEND.clone(student, spec, data, probe, device)

    finals: dict[str, nnx.Module] = {}

    def online() -> list[float]:
        finals["kdistill"] = copied()
        return kdistill_epochs("distilled", finals["kdistill"], kd, teacher, data, recipe.train, device)

    def handwritten() -> list[float]:
        finals["hand-written"] = copied()
        return handwritten_epochs(finals["hand-written"], teacher, data, recipe.train)

    variants = {
        "kdistill online KD": online,
        "hand-written online KD": handwritten,
        "kdistill offline KD": lambda: kdistill_epochs(
            "distilled", copied(), kd, None, data, recipe.train, device, reader.fetch),
        "kdistill plain student": lambda: kdistill_epochs(
            "scratch", copied(), Objective.task_only(TASK), None, data, recipe.train, device),
    }
    epochs = {name: [] for name in variants}
    compile_seconds = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, run in (variants.items() if round_ % 2 else reversed(variants.items())):
            seconds = run()
            epochs[name].append(statistics.median(seconds[1:]))
            compile_seconds[name].append(seconds[0] - epochs[name][-1])
    print(f"\n`python benchmarks/jax_kd.py {' '.join(sys.argv[1:])}` — Fashion-MNIST, {len(data.train)} training "
          f"samples, batch {args.batch_size}, teacher mlp [1200, 1200], student mlp [64], T = {T}, "
          f"jax {jax.__version__} on {jax.devices()[0]}, medians of {args.rounds} interleaved rounds of "
          f"{args.epochs} epochs (first left out)\n")
    print("| variant | epoch seconds | compile seconds (1st epoch − epoch) |\n|---|---:|---:|")
    for name in variants:
        print(f"| {name} | {statistics.median(epochs[name]):.3f} | {statistics.median(compile_seconds[name]):.2f} |")
    ratios = {
        ("kdistill online-KD epoch ÷ hand-written online-KD epoch", "≤ 1.05"):
            [a / b for a, b in zip(epochs["kdistill online KD"], epochs["hand-written online KD"])],
        ("kdistill offline-KD epoch ÷ plain-student epoch", "≤ 1.10"):
            [a / b for a, b in zip(epochs["kdistill offline KD"], epochs["kdistill plain student"])],
    }
    print("\n| ratio | median | per-round range | target |\n|---|---:|---:|---:|")
    for (name, target), values in ratios.items():
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f}–{max(values):.3f} | {target} |")
    print(f"\n| final student ({args.epochs} epochs) | test accuracy |\n|---|---:|")
    for name, model in finals.items():
        accuracy = task_metrics(TASK, BACKEND.predict(model, data.test.x, 1024, device), data.test.y)["accuracy"]
        print(f"| {name} | {accuracy:.4f} |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
