"""Samples per second of distillation on 1 vs N processes (``kdistill run --nproc N``, DDP over gloo
on the CPU), on the Fashion-MNIST MLP recipe, from the distilled student's training seconds.

Every configuration trains the same student from the same saved teacher; configurations take
turns within every round (side by side), and the median over rounds is reported. Threads per
process are set with OMP_NUM_THREADS, so "1 process × 2 threads" and "2 processes × 1 thread"
use the same cores.

    python benchmarks/torch_ddp_scaling.py --out runs/bench-ddp --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

RECIPE = "fashion_mnist_mlp"
CONFIGS = [(1, 1), (1, 2), (2, 1)]  # (processes, threads per process)


def kdistill(args: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "kdistill", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    common = ["--set", "train.progress=false", "--set", "compare.scratch=false", "--set", "compare.latency_repeats=3"]
    teacher = out / "teacher" / "teacher.safetensors"
    if not teacher.exists():
        kdistill(["run", RECIPE, "--out", str(out / "teacher"), "--overwrite", *common, "--set", "teacher.train.epochs=2",
                  "--set", "train.epochs=1"], threads=2)
    rates: dict[tuple[int, int], list[float]] = {config: [] for config in CONFIGS}
    for round_index in range(args.rounds):
        for processes, threads in CONFIGS:
            directory = out / f"p{processes}-t{threads}-r{round_index}"
            kdistill(["run", RECIPE, "--nproc", str(processes), "--out", str(directory), "--overwrite", *common,
                      "--set", f"teacher.path={teacher}", "--set", f"train.epochs={args.epochs}"], threads)
            report = json.loads((directory / "report.json").read_text())
            seconds = next(m["train_seconds"] for m in report["models"] if m["role"] == "distilled")
            samples = 2 * report["data"]["train"]  # each step reads a labeled batch and as many transfer rows
            rates[(processes, threads)].append(args.epochs * samples / seconds)
    base = statistics.median(rates[(1, 2)])
    print(f"machine: {os.cpu_count()} cores; {args.rounds} rounds, median samples/s of the distilled student's epochs")
    print("| processes × threads | samples/s | ÷ 1 process × 2 threads |")
    print("|---|---|---|")
    for (processes, threads), values in rates.items():
        median = statistics.median(values)
        print(f"| {processes} × {threads} | {median:,.0f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
