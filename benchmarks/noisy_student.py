"""Noisy Student self-training over several seeds, with noise and without: test metric per round.

Each seed is a whole self-training run (its own round-0 teacher, rounds and scratch twin) in
OUT/noised/seed-N; the same recipe from that seed's round-0 teacher (``teacher.path``) with
students without noise (``--quiet`` overrides: no augmentation, no dropout for the students) in
OUT/quiet/seed-N. Finished runs are read again, not rerun.

    python benchmarks/noisy_student.py fashion_mnist_noisy_student --seeds 0 1 2 --out runs/bench-noisy-student
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from kdistill.export.exporter import saved_file
from kdistill.recipe import load_recipe
from kdistill.self_training import SUMMARY, run_rounds
from seeds import seeds_parser

QUIET = ["self_training.augment_students=false", "student.kwargs.dropout=0", "student.kwargs.input_dropout=0"]


def summaries(recipe: str, seeds: list[int], out: Path, overrides: list[str], teachers: Path | None = None) -> list[dict]:
    """Each seed's self-training summary, run now unless finished earlier; with ``teachers``, each
    seed's round 0 takes the teacher that seed trained there (``teachers/seed-N/round-0``)."""
    found = []
    for seed in seeds:
        directory = out / f"seed-{seed}"
        if (directory / f"{SUMMARY}.json").exists() and not (directory / "INCOMPLETE").exists():
            found.append(json.loads((directory / f"{SUMMARY}.json").read_text()))
            continue
        given = [] if teachers is None else \
            [f"teacher.path={saved_file(teachers / f'seed-{seed}' / 'round-0' / 'teacher', 'the round-0 teacher')}"]
        recipe_ = load_recipe(recipe, [*overrides, *given, f"train.seed={seed}", "train.progress=false"])
        _, summary = run_rounds(recipe_, directory, resume=directory.exists())
        print(f"{out.name} seed {seed}: {summary['verdict']['text']}", file=sys.stderr, flush=True)
        found.append(summary)
    return found


def cell(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def main() -> None:
    parser = seeds_parser(__doc__.splitlines()[0])
    parser.add_argument("--quiet", dest="quiet", action="append", default=None,
                        help=f"the overrides that switch the noise off (default: {' '.join(QUIET)})")
    args = parser.parse_args()
    out = Path(args.out)
    noised = summaries(args.recipe, args.seeds, out / "noised", args.overrides)
    quiet = summaries(args.recipe, args.seeds, out / "quiet", [*args.overrides, *(args.quiet or QUIET)], out / "noised")
    metric = noised[0]["metric"]
    print(f"\n`python benchmarks/noisy_student.py {' '.join(sys.argv[1:])}` — test {metric} × 100, "
          f"mean ± std over seeds {', '.join(map(str, args.seeds))}\n")
    print("| round | noised student | per seed | student without noise | per seed |\n|---:|---:|---:|---:|---:|")
    for index in range(len(noised[0]["rounds"])):
        columns = [[100 * run["rounds"][index]["student"] for run in runs] for runs in (noised, quiet)]
        print(f"| {index} | " + " | ".join(f"{cell(v)} | {', '.join(f'{x:.2f}' for x in v)}" for v in columns) + " |")
    twins = [[100 * run["rounds"][0]["scratch"] for run in runs] for runs in (noised, quiet)]
    print("| scratch twin | " + " | ".join(f"{cell(v)} | {', '.join(f'{x:.2f}' for x in v)}" for v in twins) + " |")
    for name, runs in (("noised", noised), ("without noise", quiet)):
        gains = [100 * (run["rounds"][-1]["student"] - run["rounds"][0]["student"]) for run in runs]
        print(f"\nlast round − round-0 teacher, {name}: {cell(gains)} points (target ≥ 1)")


if __name__ == "__main__":
    main()
