"""Teacher / scratch / distilled over several student seeds: mean ± std of the verdict's test metric (and the others).

The first seed trains the teacher; later seeds reuse that saved teacher (``teacher.path``), so the
seeds vary the student's initial weights, batch order and dropout, not the teacher. Every run is
an ordinary ``kdistill run`` whose report stays in OUT/seed-N.

    python benchmarks/seeds.py fashion_mnist_mlp --seeds 0 1 2 --out runs/bench-fashion-mlp
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from kdistill.recipe import load_recipe
from kdistill.run import run


def seeds_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark over seeds: RECIPE --seeds ... --out DIR --set FIELD=VALUE..."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    return parser


def main() -> None:
    args = seeds_parser(__doc__.splitlines()[0]).parse_args()
    out = Path(args.out)
    teacher = None
    reports = []
    for seed in args.seeds:
        overrides = [*args.overrides, f"train.seed={seed}", "train.progress=false"]
        if teacher is not None:
            overrides.append(f"teacher.path={teacher}")
        directory = out / f"seed-{seed}"
        if (directory / "report.json").exists() and not (directory / "INCOMPLETE").exists():
            report = json.loads((directory / "report.json").read_text())
        else:
            _, report = run(load_recipe(args.recipe, overrides), directory, resume=directory.exists())
        trained = [path for path in (directory / "teacher.safetensors", directory / "teacher.keras") if path.exists()]
        teacher = teacher or (trained[0].resolve() if trained else None)  # a store teacher trains nothing
        reports.append(report)
        print(f"seed {seed}: {report['verdict']['text']}", file=sys.stderr, flush=True)

    metric = reports[0]["verdict"]["metric"]
    others = list(dict.fromkeys(name for model in reports[0]["models"] for name in model["metrics"]
                                if name != metric))  # e.g. a probe's accuracy, each head's of a two-head student
    print(f"\n`python benchmarks/seeds.py {' '.join(sys.argv[1:])}`\n")
    print(f"| model | test {metric} (mean ± std over seeds {', '.join(map(str, args.seeds))}) | per seed |"
          + "".join(f" test {name} |" for name in others))
    print("|---|---|---|" + "---|" * len(others))
    for role in ("teacher", "scratch", "distilled"):
        def values(name: str) -> list[float]:
            return [100 * m["metrics"][name] for r in reports for m in r["models"]
                    if m["role"] == role and name in m["metrics"]]
        shown = [values(metric), *(values(name) for name in others)]
        cells = [f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.2f}" if v else "—"
                 for v in shown]
        print(f"| {role} | {cells[0]} | {', '.join(f'{v:.2f}' for v in shown[0])} |" + "".join(f" {c} |" for c in cells[1:]))
    for size in ("batch_1", "batch_32", "batch_256"):
        ratios = []
        for r in reports:
            latency = {m["role"]: m["latency_ms"] for m in r["models"]}
            if latency.get("teacher") and latency.get("distilled") and size in latency["teacher"]:
                ratios.append(latency["distilled"][size] / latency["teacher"][size])
        if ratios:
            print(f"distilled ÷ teacher latency, {size.replace('_', ' ')}: per seed {', '.join(f'{v:.3f}' for v in ratios)}")
    deltas = [100 * r["verdict"]["delta"] for r in reports]
    print(f"\ndistilled − scratch: {statistics.mean(deltas):+.2f} points (mean), per seed {', '.join(f'{d:+.2f}' for d in deltas)}")


if __name__ == "__main__":
    main()
