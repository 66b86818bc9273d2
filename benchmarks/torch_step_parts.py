"""Where an offline-KD step's extra time goes: microseconds per training step of the parts that a
plain student step does not have, on the shapes of the offline benchmark (batch 128, 10 classes,
the store read once per chunk of 20 steps, as the training loop does). Every part is timed in the
same rounds, one after another, so a busy machine slows them alike; medians over the rounds.

    python benchmarks/torch_step_parts.py --threads 1
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdistill.store import StoreReader, StoreWriter
from kdistill.torch import losses
from kdistill.training import CHECK_EVERY


def interleaved(parts: dict, rounds: int, repeats: int) -> dict[str, float]:
    """Median over ``rounds`` of each part's mean seconds per call of ``repeats`` calls, in µs."""
    timings: dict[str, list[float]] = {name: [] for name in parts}
    for round_ in range(rounds + 1):
        for name, call in (parts.items() if round_ % 2 else reversed(parts.items())):
            started = time.perf_counter()
            for index in range(repeats):
                call(index)
            if round_:  # round 0 warms up
                timings[name].append((time.perf_counter() - started) / repeats * 1e6)
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, classes, samples, temperature = 128, 10, 36_000, 4.0
    chunk = batch * CHECK_EVERY
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="kdistill-parts-"))
    ids = np.sort(rng.permutation(70_000)[:samples]).astype(np.int64)  # a subset's ids, as Fashion-MNIST's
    writer = StoreWriter(work / "store", ids=ids, num_classes=classes, teacher={"name": "random"},
                         dataset_fingerprint="random", shard_size=8192)
    writer.write(ids, rng.normal(scale=3.0, size=(samples, classes)).astype(np.float32))
    writer.close()
    reader = StoreReader(work / "store")
    chunks = [ids[rng.permutation(samples)[:chunk]] for _ in range(8)]
    stored = reader.fetch(chunks[0])
    hidden = torch.randn(batch, 64)
    weight = torch.randn(64, classes, requires_grad=True)  # the student's head: backward runs as in a step
    teacher, labels = torch.from_numpy(stored[:batch]), torch.randint(0, classes, (batch,))
    soft_targets = losses.SoftTargets.of(teacher, temperature)  # made for a whole chunk in a step
    chunk_logits = torch.from_numpy(stored)

    def step_loss(loss) -> None:
        student = hidden @ weight
        loss(student).backward()

    def kl_div(student: torch.Tensor) -> torch.Tensor:
        return temperature**2 * F.kl_div(F.log_softmax(student / temperature, -1),
                                         F.log_softmax(teacher / temperature, -1), reduction="batchmean", log_target=True)

    def soft_target_ce(student: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            log_p = F.log_softmax(teacher / temperature, dim=-1)
            negative_entropy = (log_p.exp() * log_p).sum(-1).mean()
        return temperature**2 * (F.cross_entropy(student / temperature, log_p.exp()) + negative_entropy)

    def task(student: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student, labels)

    parts = {  # per step: a chunk's store read and copy are shared by its 20 steps
        "StoreReader.fetch of a chunk (20 × 128 scattered ids), per step":
            lambda i: reader.fetch(chunks[i % len(chunks)]),
        "torch.from_numpy + split of a chunk, per step":
            lambda i: torch.split(torch.from_numpy(stored), [batch] * CHECK_EVERY),
        "matmul + sum, forward + backward (the step's fixed backward cost)":
            lambda i: step_loss(lambda s: s.sum()),
        "kdistill kd loss, forward + backward": lambda i: step_loss(lambda s: losses.kd(s, teacher, temperature)),
        "F.kl_div on log_softmax (Python-number scales), forward + backward": lambda i: step_loss(kl_div),
        "soft-target F.cross_entropy + entropy, forward + backward": lambda i: step_loss(soft_target_ce),
        "F.cross_entropy on labels, forward + backward": lambda i: step_loss(task),
        "0.1 · CE + 0.9 · kd summed from 0 (as the objective), forward + backward": lambda i: step_loss(
            lambda s: sum(w * v for w, v in ((0.1, task(s)), (0.9, losses.kd(s, teacher, temperature))))),
        "1.0 · CE summed from 0 (the plain objective), forward + backward": lambda i: step_loss(
            lambda s: sum(w * v for w, v in ((1.0, task(s)),))),
        "0.1 · CE + 0.9 · kd as the fused node (what the offline step runs), forward + backward": lambda i: step_loss(
            lambda s: losses.task_and_kd(s, soft_targets, labels, 0.1, 0.9, temperature)[0]),
        "SoftTargets.per_step of a chunk (softmax of 20 × 128 teacher rows), per step":
            lambda i: losses.SoftTargets.per_step(chunk_logits, [batch] * CHECK_EVERY, temperature),
        "F.log_softmax over the last axis (128 × 10), forward": lambda i: F.log_softmax(teacher, dim=-1),
        "the same over the first axis of the transposed view (losses.log_softmax_classes), forward":
            lambda i: losses.log_softmax_classes(teacher),
    }
    medians = interleaved(parts, args.rounds, args.repeats)
    per_step = {name: value / CHECK_EVERY if "per step" in name else value for name, value in medians.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, {classes} classes, "
          f"medians of {args.rounds} interleaved rounds of {args.repeats} calls\n")
    print("| part | µs per step |\n|---|---:|")
    for name, value in per_step.items():
        print(f"| {name} | {value:.1f} |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
