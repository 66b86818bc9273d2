"""Online KD of a pretrained transformer: does an epoch cost what its parts cost?

The teacher is all-MiniLM-L6-v2 (``transformer`` with ``pretrained: minilm-l6``, 6 layers); the
student its layers 0 and 3 (``layers: [0, 3]``, pooling ``cls``), as in the ``bbc_minilm`` recipe;
the data BBC News tokenized to ``--max-length`` tokens (``limit`` labeled training articles, no
transfer set, so every step's teacher forward covers exactly the student's rows). Three variants,
side by side in interleaved rounds (the median of ``--rounds`` after one warm-up round):

- online-KD epoch: kdistill's one training loop (``fit`` on the torch backend) with weights
  ``{task: 0.5, kd: 0.5}``, ``kd`` at T = 2, the frozen teacher run on every batch;
- plain student epoch: the same loop on the task loss alone;
- teacher pass: ``predict(teacher, x_train, batch_size)`` over the same inputs at the training
  batch size (eval mode, no gradients).

Printed: online ÷ (plain + teacher pass); the target is ≤ 1.10. An epoch's seconds are the loop's
own (``History.epoch_seconds``: validation excluded).

    python benchmarks/transformer_online_kd.py                  # ~10 min on 2 quiet CPU cores
    python benchmarks/transformer_online_kd.py --threads 1      # steadier on a shared machine
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys

import torch

from kdistill.data import load_task_data
from kdistill.objective import Objective
from kdistill.recipe import DataConfig, TrainConfig
from kdistill.torch.backend import BACKEND, predict
from kdistill.torch.zoo import transformer
from kdistill.training.loop import fit

import timing

TARGET = 1.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=128, help="labeled training articles")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_task_data(DataConfig(dataset="bbc_news", on_bad_sample="skip", cache_in_memory=True, limit=args.limit,
                                     text={"tokenizer": "minilm-l6", "max_length": args.max_length}), "classification")
    shape, classes = data.input_shape, data.output_dim
    torch.manual_seed(1)
    teacher = transformer(shape, classes, pretrained="minilm-l6", vocab_size=data.meta["vocab_size"])
    BACKEND.set_trainable(teacher, False)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=2e-4, schedule="constant", progress=False,
                         device="cpu", temperature=2.0)
    device = torch.device("cpu")

    def student():
        torch.manual_seed(0)
        return transformer(shape, classes, pretrained="minilm-l6", layers=[0, 3], pooling="cls",
                           vocab_size=data.meta["vocab_size"])

    def epoch(objective: Objective, with_teacher: bool) -> float:
        distiller = BACKEND.distiller(student(), objective, teacher if with_teacher else None, (), None, device, 0)
        return fit("bench", BACKEND, distiller, data, config, device).epoch_seconds[0]

    kd = Objective("classification", {"task": 0.5, "kd": 0.5}, {"kd": {"temperature": 2.0}})
    variants = {
        "online": lambda: epoch(kd, True),
        "plain": lambda: epoch(Objective.task_only("classification"), False),
        "teacher": lambda: timing.wall_seconds(lambda: predict(teacher, data.train.x, args.batch_size, device)),
    }
    for variant in variants.values():  # warm-up round
        variant()
    results = timing.interleaved(variants, args.rounds, lambda index, row: print(
        f"round {index + 1}: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in row.items()),
        file=sys.stderr, flush=True))
    medians = {name: statistics.median(values) for name, values in results.items()}
    ratios = [online / (plain + teach) for online, plain, teach in
              zip(results["online"], results["plain"], results["teacher"])]
    print(f"\n`python benchmarks/transformer_online_kd.py {shlex.join(sys.argv[1:])}` "
          f"({len(data.train)} articles × {args.max_length} tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| online-KD epoch (s) | plain student epoch (s) | teacher pass (s) | online ÷ (plain + teacher) |")
    print("|---|---|---|---|")
    print(f"| {medians['online']:.2f} | {medians['plain']:.2f} | {medians['teacher']:.2f} | "
          f"{statistics.median(ratios):.3f} (per round {', '.join(f'{r:.3f}' for r in ratios)}; target ≤ {TARGET}) |")


if __name__ == "__main__":
    main()
