"""Streaming from a PNG folder vs training from memory, side by side in one run, on PyTorch.

Fashion-MNIST's images are written as PNG files (Pillow) into a temporary folder; the same CNN
student (the ``fashion_mnist_cnn`` recipe's) trains one epoch on its labels
- in memory: the decoded images as one array on the device (no reader);
- streamed: every step's PNG files decoded by ``train.workers`` reader threads, read ahead
  (:mod:`kdistill.data.stream`), for 1 and 2 workers;
and a decode-only pass reads the same files through the same reader, with no training. Printed per
worker count: streaming epoch ÷ max(in-memory epoch, decode-only pass) — 1.0 means the loader keeps
the step fed whichever is the bottleneck — and the share of the streamed epoch the loop spent
waiting for the reader. Rounds alternate the variants' order so drift hits them alike.

``--torch-threads`` (default 1) sets torch's intra-op threads for every variant: on a shared
2-core machine, torch's two OpenMP threads contend with every other process and the reader
(an in-memory epoch measured several times slower with 2 threads than with 1 there).

    nice -n 10 python benchmarks/streaming.py --images 6000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import timing
import torch
from png_folder import png_task_data, write_png_folder

from kdistill import backends
from kdistill.data import load_task_data
from kdistill.data.stream import read_ahead
from kdistill.objective import Objective
from kdistill.recipe import load_recipe
from kdistill.training import CHECK_EVERY
from kdistill.training import loop
from kdistill.training.loop import fit
from kdistill.training.plan import epoch_plan

WAITED: list[float] = []


def timed_read_ahead(*args, **kwargs) -> Iterator:
    """The loop's reader, adding the seconds each ``next`` waited to ``WAITED``."""
    reader = read_ahead(*args, **kwargs)
    while True:
        started = time.perf_counter()
        try:
            item = next(reader)
        except StopIteration:
            return
        finally:
            WAITED.append(time.perf_counter() - started)
        yield item


def epoch_seconds(recipe, data) -> float:
    """Seconds of one training epoch of the recipe's student on its labels (validation excluded)."""
    backend = backends.load(recipe.backend)
    device = backend.device("cpu")
    student, _ = backend.build(recipe.student, data, "student", recipe.train.seed, device)
    distiller = backend.distiller(student, Objective.task_only(recipe.task), None, (), None, device, 0)
    return fit("scratch", backend, distiller, data, recipe.train, device).epoch_seconds[0]


def decode_seconds(recipe, data, workers: int) -> float:
    """Seconds of reading every training step's files once, in the plan's order, through the reader."""
    plan = epoch_plan(recipe.train.seed, 0, len(data.train), None, recipe.train.batch_size)
    started = time.perf_counter()
    for _ in read_ahead([plan.batch(step)[0] for step in range(plan.steps)], data.train.x.read, workers,
                        recipe.train.prefetch * CHECK_EVERY):
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=6000, help="training images (data.limit)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads for every variant")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    recipe = load_recipe("fashion_mnist_cnn", [f"data.limit={args.images}", "data.transfer=null", "train.epochs=1",
                                               "train.progress=false", "train.device=cpu"])
    data = load_task_data(recipe.data, recipe.task)
    with tempfile.TemporaryDirectory() as folder:
        write_png_folder(data, Path(folder))
        streamed = png_task_data(data, Path(folder))
        loop.read_ahead = timed_read_ahead
        with_workers = {n: recipe.model_copy(update={"train": recipe.train.model_copy(update={"workers": n})})
                        for n in args.workers}
        waits: dict[int, list[float]] = {n: [] for n in args.workers}

        def streaming(n: int):
            def run() -> float:
                WAITED.clear()
                seconds = epoch_seconds(with_workers[n], streamed)
                waits[n].append(sum(WAITED) / seconds)
                return seconds
            return run

        variants = {"in_memory": lambda: epoch_seconds(recipe, data)}
        for n in args.workers:
            variants[f"decode_{n}"] = lambda n=n: decode_seconds(recipe, streamed, n)
            variants[f"stream_{n}"] = streaming(n)
        epoch_seconds(with_workers[args.workers[0]], streamed)  # warm-up: imports, first allocations
        results = timing.interleaved(variants, args.rounds,
                                     lambda r, seconds: print(f"round {r}: " + ", ".join(
                                         f"{name} {value:.2f}s" for name, value in seconds.items()), flush=True))
    summary = {"images": len(data.train), "batch_size": recipe.train.batch_size, "torch_threads": args.torch_threads,
               "seconds": results, "workers": {}}
    for n in args.workers:
        bound = [max(a, b) for a, b in zip(results["in_memory"], results[f"decode_{n}"])]
        summary["workers"][n] = {"stream_over_bound": timing.per_round_ratio(results[f"stream_{n}"], bound)["median"],
                                 "decode_over_in_memory": timing.per_round_ratio(results[f"decode_{n}"],
                                                                                 results["in_memory"])["median"],
                                 "waiting_share": float(np.median(waits[n]))}
    summary["machine"] = timing.machine({"torch": torch.__version__})
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
