"""Any teacher teaches any student: the distilled student's test accuracy for every (teacher
framework, student framework) pair, against the same student taught by a teacher of its own
framework, on a Fashion-MNIST subset, over seeds.

Every run is ``kdistill run fashion_mnist_mlp`` with ``backend=STUDENT teacher.backend=TEACHER``
(a foreign teacher is trained in its framework and cached to ``OUT/teacher-store``); the settings
are those of ``tests/test_cross_framework.py`` (a 256-unit teacher, 4 epochs each) unless changed.

    python benchmarks/cross_framework_accuracy.py --seeds 0 1 2     # ~8 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

from kdistill.cli import main as kdistill

BACKENDS = ("torch", "keras", "jax")


def accuracy(out: Path, role: str) -> float:
    models = json.loads((out / "report.json").read_text())["models"]
    return next(model["metrics"]["accuracy"] for model in models if model["role"] == role)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--limit", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-cross-framework-accuracy"))
    args = parser.parse_args()
    found: dict[tuple[str, str], list[float]] = {}
    for seed, (teacher, student) in itertools.product(args.seeds, itertools.product(BACKENDS, BACKENDS)):
        out = args.out / f"seed{seed}" / f"{teacher}-to-{student}"
        settings = [f"data.limit={args.limit}", "teacher.kwargs={hidden: [256], dropout: 0.3, input_dropout: 0.1}",
                    f"teacher.train.epochs={args.epochs}", f"train.epochs={args.epochs}", "compare.scratch=false",
                    "compare.latency_repeats=3", "train.progress=false", "train.device=cpu", f"train.seed={seed}",
                    f"backend={student}", f"teacher.backend={teacher}"]
        if not (out / "report.json").exists():
            assert kdistill(["run", "fashion_mnist_mlp", "--out", str(out),
                             *(arg for setting in settings for arg in ("--set", setting))]) == 0
        found[teacher, student] = found.get((teacher, student), []) + [accuracy(out, "distilled")]
    print(f"\nseeds {args.seeds}, data.limit {args.limit}, {args.epochs} epochs; distilled test accuracy "
          "(mean over seeds) and, per seed, minus the student taught by its own framework's teacher:")
    print("| teacher → student | distilled accuracy | gap to same-framework teacher (per seed) |")
    print("|---|---|---|")
    for teacher, student in itertools.product(BACKENDS, BACKENDS):
        gaps = [a - b for a, b in zip(found[teacher, student], found[student, student])]
        print(f"| {teacher} → {student} | {statistics.mean(found[teacher, student]):.4f} | "
              + ("—" if teacher == student else ", ".join(f"{gap:+.4f}" for gap in gaps)) + " |")


if __name__ == "__main__":
    main()
