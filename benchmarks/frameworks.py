"""PyTorch, Keras and JAX side by side: one table of epoch times and accuracy on Fashion-MNIST.

Per framework, with kdistill's own building blocks (each backend's zoo ``build_model``, its
``Distiller`` and its trainer's ``fit``), on the same data and the same recipe:

* plain student epoch — ``fit`` with the task loss alone (what the scratch twin trains);
* online KD epoch — the frozen teacher runs on every batch (weights task 0.1 / kd 0.9, T = 4);
* offline KD epoch — the same loss, the teacher's logits read from a soft-target store that
  ``kdistill cache`` wrote from that framework's saved teacher (``StoreReader.fetch`` per chunk);
* teacher inference — the backend's ``predict`` over the same training samples at the training
  batch size (what online KD adds to a plain epoch, at the least).

Ratios, each taken within one round and then the median over rounds: offline ÷ plain (the cost of
reading stored targets; floor 1.0) and online ÷ (plain + teacher inference) (online KD against
its floor). Accuracy: after the last round, the test accuracy of the online-distilled student and
of the plain one (the scratch twin: same initial weights, same batches, task loss only), and the
teacher's; the offline student is shown too (it learns from the same logits as the online one).

Timing as the other benchmarks: every variant of every framework runs once per round, in reverse
order on alternate rounds (``timing.interleaved``); a variant trains ``--epochs`` epochs from the
same initial weights, and its figure for the round is the median epoch with the first left out
(it holds set-up, tracing and compilation); epochs are timed between the validation passes ``fit``
makes after each epoch (``timing.epoch_seconds``), so validation is excluded everywhere. The
teacher (``--teacher-epochs``) and the stores are made once, before the rounds. Keras's teacher
inference is kdistill's Keras ``predict`` (``model.predict``), whose per-call set-up its training
step does not pay: there a ratio to the floor below 1 is possible.

The default recipe is the PyTorch and JAX speed benchmarks' (all labels, T = 4, task 0.1 / kd 0.9):
with every label and a short schedule, KD at T = 4 makes these small students *worse* than the
scratch twin (BENCHMARKS.md, "When distillation did not help"). ``--set`` changes the recipe, e.g.
``--set "losses={kd: {temperature: 1}}" --set "weights={task: 0.5, kd: 0.5}"``.

    python benchmarks/frameworks.py --out runs/bench-frameworks.json   # 20,000 images, 7 rounds of 3 epochs
    python benchmarks/frameworks.py --limit 2000 --epochs 2 --rounds 1 --teacher-epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import copy
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
from kdistill.cli import main as kdistill_cli
from kdistill.data import load_task_data
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError
from kdistill.recipe import Recipe, load_recipe
from kdistill.report.metrics import task_metrics
from kdistill.store import StoreReader

FRAMEWORKS = ("torch", "keras", "jax")
RECIPE = "fashion_mnist_mlp"
T = 4.0
VARIANTS = ("plain", "online", "offline", "teacher")


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """The recipe of the PyTorch and JAX speed benchmarks (all labels, no transfer set, constant lr,
    teacher MLP 1200-1200, student MLP 64, kd at T = 4), then the user's ``--set``."""
    return [f"data.limit={args.limit}", "data.transfer=null", f"train.epochs={args.epochs}", "train.progress=false",
            "train.device=cpu", f"train.batch_size={args.batch_size}", "train.schedule=constant",
            "teacher.kwargs={hidden: [1200, 1200]}", "student.kwargs={hidden: [64]}",
            f"losses={{kd: {{temperature: {T:g}}}}}", "weights={task: 0.1, kd: 0.9}",
            f"teacher.train={{epochs: {args.teacher_epochs}}}", *args.overrides]


class Framework:
    """One framework's row: its teacher (trained here, saved, cached to a store with ``kdistill
    cache``), the student's initial weights, and the four measured variants. Subclasses give the
    backend's calls; everything else is shared."""

    name = ""

    def __init__(self, overrides: list[str], data: TaskData, work: Path):
        self.overrides = [*overrides, f"backend={self.name}"]
        self.recipe: Recipe = load_recipe(RECIPE, self.overrides)
        self.data, self.batch_size = data, self.recipe.train.batch_size
        self.specs: dict[str, dict] = {}  # what rebuilds a saved torch or JAX model, by field
        self.teacher = self.build(self.recipe.teacher, "teacher", self.recipe.teacher_training().seed)
        self.fit(self.distiller(self.teacher, {"task": 1.0}), self.recipe.teacher_training())
        self.freeze(self.teacher)
        teacher_file = self.save_teacher(work / f"{self.name}-teacher")
        store = work / f"{self.name}-store"
        sets = [arg for override in [*self.overrides, f"teacher.path={teacher_file}"] for arg in ("--set", override)]
        if kdistill_cli(["cache", RECIPE, *sets, "--store", str(store)]) != 0:
            raise KdistillError(f"{self.name}: kdistill cache failed (its error is above)")
        self.reader = StoreReader(store)
        self.initial = self.build(self.recipe.student, "student", self.recipe.train.seed)
        self.finals: dict[str, Any] = {}

    # the backend's calls
    def build(self, config, field: str, seed: int) -> Any: ...
    def fresh(self) -> Any: ...
    def distiller(self, student, weights: dict, losses: dict | None = None, teacher=None, offline: bool = False) -> Any: ...
    def trainer(self) -> Any: ...
    def freeze(self, model) -> None: ...
    def save_teacher(self, stem: Path) -> Path: ...
    def versions(self) -> dict[str, str]: ...

    # shared
    def epochs(self, variant: str, student, teacher=None, offline: bool = False) -> float:
        """Train ``student`` as ``variant`` for the recipe's epochs; the median epoch, the first left out."""
        recipe = self.recipe
        weights, losses = ({"task": 1.0}, None) if variant == "plain" else \
            (recipe.weights, {name: recipe.loss_settings(name) for name in recipe.losses})
        distiller = self.distiller(student, weights, losses, teacher, offline)
        seconds = timing.epoch_seconds(
            self.trainer(), lambda: self.fit(distiller, self.recipe.train, self.reader.fetch if offline else None))
        if len(seconds) != self.recipe.train.epochs:
            raise RuntimeError(f"{self.name} {variant}: timed {len(seconds)} epochs of {self.recipe.train.epochs}")
        self.finals[variant] = student
        return statistics.median(seconds[1:])

    def fit(self, distiller, config, teacher_outputs=None) -> Any:
        """The backend trainer's ``fit`` (Keras and JAX take no device)."""
        return self.trainer().fit("bench", distiller, self.data, config, teacher_outputs=teacher_outputs)

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        return self.trainer().predict(model, x, self.batch_size)

    def variants(self) -> dict[str, Any]:
        return {
            "plain": lambda: self.epochs("plain", self.fresh()),
            "online": lambda: self.epochs("online", self.fresh(), teacher=self.teacher),
            "offline": lambda: self.epochs("offline", self.fresh(), offline=True),
            "teacher": lambda: timing.wall_seconds(lambda: self.predict(self.teacher, self.data.train.x)),
        }

    def accuracy(self, model) -> float:
        return task_metrics("classification", self.predict(model, self.data.test.x), self.data.test.y)["accuracy"]


class TorchFramework(Framework):
    name = "torch"

    def build(self, config, field, seed):
        import torch

        from kdistill.torch.models import build_model

        torch.manual_seed(seed)
        model, self.specs[field] = build_model(config, self.data, field)
        return model

    def fresh(self):
        return copy.deepcopy(self.initial)

    def distiller(self, student, weights, losses=None, teacher=None, offline=False):
        from kdistill.torch.distiller import Distiller

        return Distiller(student, "classification", weights, losses, teacher=teacher, offline=offline)

    def fit(self, distiller, config, teacher_outputs=None):
        import torch

        return self.trainer().fit("bench", distiller, self.data, config, torch.device("cpu"),
                                  teacher_outputs=teacher_outputs)

    def trainer(self):
        from kdistill.torch import trainer

        return trainer

    def predict(self, model, x):
        import torch

        return self.trainer().predict(model, torch.from_numpy(np.ascontiguousarray(x)), self.batch_size)

    def freeze(self, model):
        from kdistill.torch.distiller import freeze

        freeze(model)

    def save_teacher(self, stem):
        from kdistill.torch.models import save_model

        return save_model(self.teacher, self.specs["teacher"], stem)

    def versions(self):
        import torch

        return {"torch": torch.__version__, "torch_threads": str(torch.get_num_threads())}


class KerasFramework(Framework):
    name = "keras"

    def build(self, config, field, seed):
        import keras

        from kdistill.keras.models import build_model

        keras.utils.set_random_seed(seed)
        return build_model(config, self.data, field)

    def fresh(self):
        import keras

        model = keras.models.clone_model(self.initial)
        model.set_weights(self.initial.get_weights())
        return model

    def distiller(self, student, weights, losses=None, teacher=None, offline=False):
        from kdistill.keras.distiller import Distiller

        return Distiller(student, weights, losses, teacher=teacher, offline=offline, task="classification")

    def trainer(self):
        from kdistill.keras import trainer

        return trainer

    def freeze(self, model):
        model.trainable = False

    def save_teacher(self, stem):
        from kdistill.keras.models import save_model

        return save_model(self.teacher, stem.with_suffix(".keras"))

    def versions(self):
        import keras

        versions = {"keras": keras.__version__, "keras_backend": keras.backend.backend()}
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            versions["tensorflow"] = tf.__version__
        return versions


class JaxFramework(Framework):
    name = "jax"

    def build(self, config, field, seed):
        from kdistill.jax.models import build_model

        model, self.specs[field] = build_model(config, self.data, field, seed)
        return model

    def fresh(self):
        from kdistill.jax.pipeline import copied

        return copied(self.initial)

    def distiller(self, student, weights, losses=None, teacher=None, offline=False):
        from kdistill.jax.distiller import Distiller

        return Distiller(student, "classification", weights, losses, teacher=teacher, offline=offline)

    def trainer(self):
        from kdistill.jax import trainer

        return trainer

    def freeze(self, model):
        pass  # the JAX Distiller holds a teacher under stop_gradient, in eval mode

    def save_teacher(self, stem):
        from kdistill.jax.models import save_model

        return save_model(self.teacher, self.specs["teacher"], stem)

    def versions(self):
        import flax
        import jax
        import optax

        return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                "jax_device": str(jax.devices()[0])}


CLASSES = {"torch": TorchFramework, "keras": KerasFramework, "jax": JaxFramework}


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
    lines = ["| framework | plain epoch (s) | online KD epoch (s) | offline KD epoch (s) | teacher inference (s) "
             "| offline ÷ plain | online ÷ (plain + teacher) | distilled acc. % | scratch acc. % | "
             "distilled − scratch | offline-distilled acc. % | teacher acc. % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
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
    recipe = load_recipe(RECIPE, overrides)
    data = load_task_data(recipe.data, recipe.task)
    work = Path(tempfile.mkdtemp(prefix="kdistill-frameworks-"))
    started = time.perf_counter()
    try:
        frameworks = {name: CLASSES[name](overrides, data, work) for name in args.frameworks}
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
            versions = framework.versions()
            rows[name] = {
                "framework": f"{name} {versions[name]}" + (f" ({versions['keras_backend']})" if name == "keras" else ""),
                "versions": versions,
                "seconds": {variant: {"median": statistics.median(values), "per_round": values}
                            for variant, values in seconds.items()},
                "ratios": {"offline / plain": timing.per_round_ratio(seconds["offline"], seconds["plain"]),
                           "online / (plain + teacher)": timing.per_round_ratio(seconds["online"], floor)},
                "accuracy": {"distilled": framework.accuracy(framework.finals["online"]),
                             "scratch": framework.accuracy(framework.finals["plain"]),
                             "offline": framework.accuracy(framework.finals["offline"]),
                             "teacher": framework.accuracy(framework.teacher)},
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
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = {key: value for key, value in vars(args).items() if key != "out"}
        args.out.write_text(json.dumps({"command": command, "machine": environment, "settings": settings,
                                        "recipe_overrides": overrides, "frameworks": rows}, indent=2))
        print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
