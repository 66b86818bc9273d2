"""Offline distillation in PyTorch: what does training from a soft-target store cost?

Two ratios, each from variants measured side by side (interleaved rounds, medians):

(a) offline-KD epoch ÷ plain-student epoch — kdistill's ``fit`` with the teacher's logits read
    from a store (``teacher_outputs=StoreReader.fetch``, weights task 0.1 / kd 0.9) against the
    same ``fit`` with the task loss alone, same student, same data. The floor is 1.0; target ≤ 1.10.
    Both eager and with ``train.compile`` (``torch.compile`` of the step), and the compiled
    offline epoch against the eager plain one: whether compiling made distillation cheaper, or
    only the plain epoch dearer.
(b) cache-write throughput ÷ plain teacher-inference throughput — ``cache_teacher`` (teacher
    forward, top-k/dtype encoding, sha256, atomic shard writes) against ``predict`` over the same
    samples at the same batch size. Target ≥ 0.9.

    python benchmarks/torch_offline_kd.py --limit 20000 --rounds 7 --threads 1

``--clock thread`` times the epochs in CPU seconds of the training thread instead of wall seconds:
with one intra-op thread every step runs in that thread, and on a shared, busy machine its CPU
time leaves out the time other processes held the core.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from kdistill.data import load_task_data
from kdistill.recipe import load_recipe
from kdistill.store import StoreReader
from kdistill.torch.cache import cache_teacher
from kdistill.torch.distiller import Distiller
from kdistill.torch.models import build_model, save_model
from kdistill.torch.backend import BACKEND, predict, tensors
from kdistill.training import loop as loop_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="epoch seconds: wall clock, or CPU time of the training thread (use with --threads 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="recipe override, e.g. --set 'student={model: cnn, kwargs: {channels: [4, 8], hidden: 32}}'")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread":  # the loop's epoch timer reads the training thread's CPU time
        loop_module.time = types.SimpleNamespace(perf_counter=time.thread_time)
    work = Path(tempfile.mkdtemp(prefix="kdistill-offline-"))
    overrides = [f"data.limit={args.limit}", "data.transfer=null", "train.epochs=1", "train.progress=false",
                 "train.device=cpu", f"train.batch_size={args.batch_size}", "train.schedule=constant",
                 "teacher.kwargs={hidden: [1200, 1200]}", "student.kwargs={hidden: [64]}",
                 "losses={kd: {temperature: 4}}", "weights={task: 0.1, kd: 0.9}", *args.overrides]
    recipe = load_recipe("fashion_mnist_mlp", overrides)
    data = load_task_data(recipe.data, recipe.task)
    torch.manual_seed(0)
    teacher, spec = build_model(recipe.teacher, data, "teacher")
    teacher_file = save_model(teacher, spec, work / "teacher")
    recipe = load_recipe("fashion_mnist_mlp", [*overrides, f"teacher.path={teacher_file}"])
    x_all = tensors(data.train, "cpu")[0]
    n_cached = sum(len(split) for split in (data.train, data.val, data.test))

    def cache() -> float:
        shutil.rmtree(work / "store", ignore_errors=True)
        return cache_teacher(recipe, data, work / "store", batch_size=1024)["seconds"]

    def inference() -> float:
        x = torch.cat([tensors(split, "cpu")[0] for split in (data.train, data.val, data.test)])
        started = time.perf_counter()
        predict(teacher.eval(), x, 1024)
        return time.perf_counter() - started

    cache()
    reader = StoreReader(work / "store")

    def epoch(offline: bool, compiled: bool) -> float:
        torch.manual_seed(1)
        student, _ = build_model(recipe.student, data, "student")
        distiller = (Distiller(student, "classification", recipe.weights, {"kd": {"temperature": 4.0}}, offline=True)
                     if offline else Distiller(student, "classification", {"task": 1.0}))
        return BACKEND.fit("bench", distiller, data, recipe.train.model_copy(update={"compile": compiled}),
                           teacher_outputs=reader.fetch if offline else None).train_seconds

    variants = {"offline KD epoch": lambda: epoch(True, False), "plain student epoch": lambda: epoch(False, False),
                "offline KD epoch, compiled": lambda: epoch(True, True),
                "plain student epoch, compiled": lambda: epoch(False, True),
                "cache write": cache, "teacher inference": inference}
    times = {name: [] for name in variants}
    for round_ in range(args.rounds + 1):
        for name, run in (variants.items() if round_ % 2 else reversed(variants.items())):
            seconds = run()
            if round_:  # round 0 warms up
                times[name].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n`python benchmarks/torch_offline_kd.py {' '.join(sys.argv[1:])}` — Fashion-MNIST, {len(x_all)} training "
          f"samples, batch {args.batch_size}, teacher mlp [1200, 1200], student {recipe.student.model} "
          f"{recipe.student.kwargs}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, medians of {args.rounds} interleaved rounds\n")
    print("| variant | seconds |\n|---|---:|")
    for name, value in median.items():
        print(f"| {name} | {value:.3f} |")
    ratios = [("offline-KD epoch ÷ plain-student epoch, eager", "offline KD epoch", "plain student epoch", "≤ 1.10"),
              ("offline-KD epoch ÷ plain-student epoch, both compiled", "offline KD epoch, compiled",
               "plain student epoch, compiled", "≤ 1.10"),
              ("compiled offline-KD epoch ÷ eager plain-student epoch", "offline KD epoch, compiled",
               "plain student epoch", ""),
              (f"cache-write ÷ teacher-inference throughput ({n_cached} samples)", "teacher inference", "cache write", "≥ 0.9")]
    print("\n| ratio | median | per-round range | target |\n|---|---:|---:|---:|")
    for label, numerator, denominator, target in ratios:
        per_round = [a / b for a, b in zip(times[numerator], times[denominator])]
        print(f"| {label} | {statistics.median(per_round):.3f} | {min(per_round):.3f}–{max(per_round):.3f} | {target} |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
