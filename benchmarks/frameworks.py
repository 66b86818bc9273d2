"""PyTorch, Keras and JAX side by side: one table of epoch times and accuracy on Fashion-MNIST.

Per framework, through the library's backend contract (``kdistill.backends``: each backend builds,
clones, predicts and contributes its training step to the one loop, ``kdistill.training.loop.fit``),
on the same data and the same recipe:

* plain student epoch — ``fit`` with the task loss alone (what the scratch twin trains);
* online KD epoch — the frozen teacher runs on every batch inside the step (weights task 0.1 /
  kd 0.9, T = 4; ``train.teacher_ahead: off``);
* teacher-ahead epoch — the same, with the teacher run on the next chunks of steps in a worker
  thread while the student trains (``train.teacher_ahead: on``, :mod:`kdistill.training.ahead`);
* offline KD epoch — the same loss, the teacher's logits read from a soft-target store that
  ``kdistill cache`` wrote from that framework's saved teacher (``StoreReader.fetch`` per chunk);
* teacher inference — the backend's ``predict`` over the same training samples at the training
  batch size (what online KD adds to a plain epoch, at the least).

Ratios, each taken within one round and then the median over rounds: offline ÷ plain (the cost of
reading stored targets; floor 1.0); online ÷ (plain + teacher inference) (online KD in sequence
against its floor); teacher-ahead ÷ (plain + teacher) and ÷ max(plain, teacher) (what running
the two side by side buys: max is its floor). Accuracy: after the last round, the test accuracy
of the online-distilled student and of the plain one (the scratch twin: same initial weights,
same batches, task loss only), and the teacher's; the offline student is shown too (it learns
from the same logits as the online one); the teacher-ahead student is checked to predict exactly
as the online one.

Timing as the other benchmarks: every variant of every framework runs once per round, in reverse
order on alternate rounds (``timing.interleaved``); a variant trains ``--epochs`` epochs from the
same initial weights, and its figure for the round is the median epoch with the first left out
(it holds set-up, tracing and compilation); an epoch is the loop's own ``History.epoch_seconds``,
which leaves validation out everywhere. The
teacher (``--teacher-epochs``) and the stores are made once, before the rounds. Keras's teacher
inference is kdistill's Keras ``predict`` (``model.predict``), whose per-call set-up its training
step does not pay: there a ratio to the floor below 1 is possible.

The default recipe is the PyTorch and JAX speed benchmarks' (all labels, T = 4, task 0.1 / kd 0.9):
with every label and a short schedule, KD at T = 4 makes these small students *worse* than the
scratch twin (BENCHMARKS.md, "When distillation did not help"). ``--set`` changes the recipe, e.g.
``--set "losses={kd: {temperature: 1}}" --set "weights={task: 0.5, kd: 0.5}"``. ``--recipe
fashion_mnist_cnn`` takes that recipe's CNNs instead of the MLP pair (all labels too).

    python benchmarks/frameworks.py --out runs/bench-frameworks.json   # 20,000 images, 7 rounds of 3 epochs
    python benchmarks/frameworks.py --limit 2000 --epochs 2 --rounds 1 --teacher-epochs 1   # a quick look
    python benchmarks/frameworks.py --recipe fashion_mnist_cnn --out runs/bench-frameworks-cnn.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import timing
from kdistill import backends
from kdistill.cli import main as kdistill_cli
from kdistill.data import load_task_data
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.objective import Objective
from kdistill.recipe import Recipe, load_recipe
from kdistill.report.metrics import task_metrics
from kdistill.store import StoreReader
from kdistill.teacher import probe_rows
from kdistill.training.ahead import by_inputs
from kdistill.training.loop import fit

FRAMEWORKS = ("torch", "keras", "jax")
MLP_RECIPE = "fashion_mnist_mlp"
T = 4.0
VARIANTS = ("plain", "online", "ahead", "offline", "teacher")


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """The recipe of the PyTorch and JAX speed benchmarks (all labels, no transfer set, constant lr,
    kd at T = 4; for the MLP recipe: teacher MLP 1200-1200, student MLP 64), then the user's ``--set``."""
    mlps = ["teacher.kwargs={hidden: [1200, 1200]}", "student.kwargs={hidden: [64]}"] if args.recipe == MLP_RECIPE else []
    return [f"data.limit={args.limit}", "data.transfer=null", f"train.epochs={args.epochs}", "train.progress=false",
            "train.device=cpu", f"train.batch_size={args.batch_size}", "train.schedule=constant", *mlps,
            f"losses={{kd: {{temperature: {T:g}}}}}", "weights={task: 0.1, kd: 0.9}",
            f"teacher.train={{epochs: {args.teacher_epochs}}}", *args.overrides]


class Framework:
    """One framework's row, through the library's backend contract (``kdistill.backends``): its
    teacher (trained in the one loop, saved, cached to a store with ``kdistill cache``), the
    student's initial weights, and the four measured variants."""

    def __init__(self, name: str, recipe: str, overrides: list[str], data: TaskData, work: Path):
        self.name, self.backend = name, backends.load(name)
        self.overrides = [*overrides, f"backend={name}"]
        self.recipe: Recipe = load_recipe(recipe, self.overrides)
        self.data, self.batch_size = data, self.recipe.train.batch_size
        self.device = self.backend.device(self.recipe.train.device)
        self.teacher, spec = self.build(self.recipe.teacher, "teacher", self.recipe.teacher_training().seed)
        self.backend.set_trainable(self.teacher, True)
        self.fit(self.distiller(self.teacher, Objective.task_only("classification")), self.recipe.teacher_training())
        self.backend.set_trainable(self.teacher, False)
        teacher_file = self.backend.save(self.teacher, spec, work / f"{name}-teacher")
        store = work / f"{name}-store"
        sets = [arg for override in [*self.overrides, f"teacher.path={teacher_file}"] for arg in ("--set", override)]
        if kdistill_cli(["cache", recipe, *sets, "--store", str(store)]) != 0:
            raise KdistillError(f"{name}: kdistill cache failed (its error is above)")
        self.reader = StoreReader(store)
        self.initial, self.initial_spec = self.build(self.recipe.student, "student", self.recipe.train.seed)
        self.finals: dict[str, Any] = {}

    def build(self, config, field: str, seed: int) -> tuple[Any, dict]:
        with self.backend.scope(self.device, self.recipe.train):
            return self.backend.build(config, self.data, field, seed, self.device)

    def fresh(self) -> Any:
        return self.backend.clone(self.initial, self.initial_spec, self.data, probe_rows(self.data), self.device)

    def distiller(self, student, objective: Objective, teacher=None) -> Any:
        return self.backend.distiller(student, objective, teacher, (), None, self.device, self.recipe.train.seed)

    def epochs(self, variant: str, student, teacher=None, offline: bool = False, ahead: bool = False) -> float:
        """Train ``student`` as ``variant`` for the recipe's epochs; the median epoch, the first left out."""
        recipe = self.recipe
        objective = Objective.task_only("classification") if variant == "plain" else \
            Objective("classification", recipe.weights, {name: recipe.loss_settings(name) for name in recipe.losses})
        outputs = self.reader.fetch if offline else \
            by_inputs(self.backend.frozen_forward(self.teacher, self.device), self.data) if ahead else None
        history = self.fit(self.distiller(student, objective, teacher), recipe.train, outputs, ahead)
        self.finals[variant] = student
        return statistics.median(history.epoch_seconds[1:])

    def fit(self, distiller, config, teacher_outputs=None, ahead: bool = False) -> Any:
        return fit("bench", self.backend, distiller, self.data, config, self.device, teacher_outputs=teacher_outputs,
                   teacher_ahead=ahead)

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        return self.backend.predict(model, x, self.batch_size, self.device)

    def variants(self) -> dict[str, Any]:
        return {
            "plain": lambda: self.epochs("plain", self.fresh()),
            "online": lambda: self.epochs("online", self.fresh(), teacher=self.teacher),
            "ahead": lambda: self.epochs("ahead", self.fresh(), ahead=True),
            "offline": lambda: self.epochs("offline", self.fresh(), offline=True),
            "teacher": lambda: timing.wall_seconds(lambda: self.predict(self.teacher, self.data.train.x)),
        }

    def accuracy(self, model) -> float:
        return task_metrics("classification", self.predict(model, self.data.test.x), self.data.test.y)["accuracy"]

    def versions(self) -> dict[str, str]:
        environment = self.backend.environment(self.device, self.recipe.train)
        modules = {module: sys.modules[module].__version__ for module in self.backend.info.framework_modules()
                   if module in sys.modules}
        return {**modules, **{key: str(value) for key, value in environment.items() if key not in modules}}


def one_thread() -> None:
    """Each framework on one intra-op thread (steadier on a shared machine): set before the
    frameworks start (XLA reads its flags at import, TensorFlow before its first op)."""
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    import torch

    torch.set_num_threads(1)
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def table(rows: dict[str, dict]) -> str:
    """The framework table in Markdown."""
    lines = ["| framework | plain epoch (s) | online KD epoch (s) | teacher-ahead epoch (s) | offline KD epoch (s) "
             "| teacher inference (s) | offline ÷ plain | online ÷ (plain + teacher) | teacher-ahead ÷ (plain + teacher) "
             "| teacher-ahead ÷ max(plain, teacher) | distilled acc. % | scratch acc. % | "
             "distilled − scratch | offline-distilled acc. % | teacher acc. % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        seconds, ratios, accuracy = row["seconds"], row["ratios"], row["accuracy"]
        shown = [f"{seconds[variant]['median']:.3f}" for variant in VARIANTS]
        shown += [f"{ratio['median']:.3f} ({ratio['min']:.3f}–{ratio['max']:.3f})" for ratio in ratios.values()]
        shown += [f"{100 * accuracy['distilled']:.2f}", f"{100 * accuracy['scratch']:.2f}",
                  f"{100 * (accuracy['distilled'] - accuracy['scratch']):+.2f}",
                  f"{100 * accuracy['offline']:.2f}", f"{100 * accuracy['teacher']:.2f}"]
        lines.append(f"| {row['framework']} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=MLP_RECIPE, help="a Fashion-MNIST recipe (its models)")
    parser.add_argument("--limit", type=int, default=20_000, help="Fashion-MNIST training samples")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (medians over them)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant per round (the first is left out)")
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    parser.add_argument("--one-thread", action="store_true", help="every framework on one intra-op thread")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override")
    parser.add_argument("--out", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch (set-up, compilation) is left out")
    if args.one_thread:
        one_thread()
    command = shlex.join(["python", "benchmarks/frameworks.py", *sys.argv[1:]])
    overrides = recipe_overrides(args)
    recipe = load_recipe(args.recipe, overrides)
    data = load_task_data(recipe.data, recipe.task)
    work = Path(tempfile.mkdtemp(prefix="kdistill-frameworks-"))
    started = time.perf_counter()
    try:
        frameworks = {name: Framework(name, args.recipe, overrides, data, work) for name in args.frameworks}
        variants = {f"{name} {variant}": run for name, framework in frameworks.items()
                    for variant, run in framework.variants().items()}
        for framework in frameworks.values():  # warm the teacher's predict (JAX compiles per batch shape)
            framework.variants()["teacher"]()
        print(f"set-up (data, teachers, stores): {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

        def progress(round_: int, results: dict[str, float]) -> None:
            shown = ", ".join(f"{key} {seconds:.3f}" for key, seconds in results.items())
            print(f"round {round_ + 1}/{args.rounds} (epoch and inference seconds): {shown}; "
                  f"{time.perf_counter() - started:.0f} s so far", file=sys.stderr, flush=True)

        measured = timing.interleaved(variants, args.rounds, progress)
        rows = {}
        for name, framework in frameworks.items():
            seconds = {variant: measured[f"{name} {variant}"] for variant in VARIANTS}
            floor = [plain + teacher for plain, teacher in zip(seconds["plain"], seconds["teacher"])]
            slower = [max(plain, teacher) for plain, teacher in zip(seconds["plain"], seconds["teacher"])]
            versions = framework.versions()
            rows[name] = {
                "framework": f"{name} {versions[name]}" + (f" ({versions['keras_backend']})" if name == "keras" else ""),
                "versions": versions,
                "seconds": {variant: {"median": statistics.median(values), "per_round": values}
                            for variant, values in seconds.items()},
                "ratios": {"offline / plain": timing.per_round_ratio(seconds["offline"], seconds["plain"]),
                           "online / (plain + teacher)": timing.per_round_ratio(seconds["online"], floor),
                           "ahead / (plain + teacher)": timing.per_round_ratio(seconds["ahead"], floor),
                           "ahead / max(plain, teacher)": timing.per_round_ratio(seconds["ahead"], slower)},
                "accuracy": {"distilled": framework.accuracy(framework.finals["online"]),
                             "scratch": framework.accuracy(framework.finals["plain"]),
                             "offline": framework.accuracy(framework.finals["offline"]),
                             "teacher": framework.accuracy(framework.teacher)},
                "ahead_predicts_as_online": bool((framework.predict(framework.finals["ahead"], data.test.x) ==
                                                  framework.predict(framework.finals["online"], data.test.x)).all()),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    versions = {key: value for row in rows.values() for key, value in row["versions"].items()}
    environment = timing.machine(versions)
    steps = -(-len(data.train) // args.batch_size)
    print(f"\n`{command}`\n")
    print(f"Machine: {environment['cpu']}, {environment['logical_cores']} logical cores, "
          f"{environment['memory_gib'] or 0:.0f} GiB, {environment['platform']}, Python {environment['python']}; "
          + ", ".join(f"{key} {value}" for key, value in versions.items())
          + ("; one intra-op thread per framework" if args.one_thread else "") + ".")
    objective = " + ".join(f"{weight:g}·{name}" for name, weight in recipe.weights.items())
    settings = "".join(f", {name} {recipe.loss_settings(name)}" for name in recipe.losses)
    print(f"Fashion-MNIST, {len(data.train)} training samples, batch {args.batch_size} ({steps} steps per epoch), "
          f"teacher {recipe.teacher.model} {recipe.teacher.kwargs} ({recipe.teacher_training().epochs} epochs), "
          f"student {recipe.student.model} {recipe.student.kwargs}, {objective}{settings}; {args.epochs} epochs "
          f"per variant per round (first left out), medians of {args.rounds} interleaved rounds (ratio cells: "
          f"median and per-round range); accuracy on the {len(data.test)} test images after {args.epochs} epochs.\n")
    print(table(rows))
    print("\nteacher-ahead student predicts exactly as the online one: "
          + ", ".join(f"{name} {'yes' if row['ahead_predicts_as_online'] else 'NO'}" for name, row in rows.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {key: value for key, value in vars(args).items() if key != "out"}
        args.out.write_text(json.dumps({"command": command, "machine": environment, "settings": settings,
                                        "recipe_overrides": overrides, "frameworks": rows}, indent=2))
        print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
