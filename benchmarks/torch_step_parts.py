"""Where an offline-KD step's extra time goes: microseconds per call of the parts that a plain
student step does not have, on the shapes of the offline benchmark (batch 128, 10 classes).

    python benchmarks/torch_step_parts.py --threads 1
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdistill.store import StoreReader, StoreWriter
from kdistill.torch import losses


def microseconds(call, repeats: int) -> float:
    """Median of 5 timings of ``repeats`` calls, per call."""
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        for index in range(repeats):
            call(index)
        timings.append((time.perf_counter() - started) / repeats * 1e6)
    return sorted(timings)[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch, classes, samples, temperature = 128, 10, 20_000, 4.0
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="kdistill-parts-"))
    ids = np.arange(samples, dtype=np.int64)
    writer = StoreWriter(work / "store", ids=ids, num_classes=classes, teacher={"name": "random"},
                         dataset_fingerprint="random", shard_size=8192)
    writer.write(ids, rng.normal(size=(samples, classes)).astype(np.float32))
    writer.close()
    reader, order = StoreReader(work / "store"), rng.permutation(samples)
    student = torch.randn(batch, classes, requires_grad=True)
    teacher, labels = torch.randn(batch, classes), torch.randint(0, classes, (batch,))

    def soft_target_ce(index: int) -> None:
        with torch.no_grad():
            log_p = F.log_softmax(teacher / temperature, dim=-1)
            negative_entropy = (log_p.exp() * log_p).sum(-1).mean()
        (temperature**2 * (F.cross_entropy(student / temperature, log_p.exp()) + negative_entropy)).backward()

    parts = {
        "StoreReader.fetch, 128 scattered ids": lambda i: reader.fetch(order[(i % 150) * batch:(i % 150 + 1) * batch]),
        "kdistill kd loss, forward + backward": lambda i: losses.kd(student, teacher, temperature).backward(),
        "F.kl_div on log_softmax, forward + backward": lambda i: (temperature**2 * F.kl_div(
            F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
            reduction="batchmean", log_target=True)).backward(),
        "soft-target F.cross_entropy + entropy, forward + backward": soft_target_ce,
        "F.cross_entropy on labels, forward + backward": lambda i: F.cross_entropy(student, labels).backward(),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, {classes} classes\n")
    print("| part | µs per call |\n|---|---:|")
    for name, call in parts.items():
        print(f"| {name} | {microseconds(call, args.repeats):.0f} |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
