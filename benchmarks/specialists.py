"""A generalist merged with specialists (Hinton et al. 2015 §5) vs the generalist alone, as the
teacher of the same Fashion-MNIST student, both from stores.

1. ``kdistill run`` trains the generalist teacher (the MLP recipe; its report also gives the
   distilled and scratch students of the online run);
2. specialists train on the confusable groups — tops {T-shirt, Pullover, Coat, Shirt} and
   footwear {Sandal, Sneaker, Ankle boot} — each with the other classes as one dustbin class
   (``data.classes``);
3. all three are cached; ``kdistill cache --combine specialists`` merges them;
4. the student is distilled from the generalist's store and from the merged store.
Every step is an ordinary kdistill command; outputs stay in OUT.

    python benchmarks/specialists.py --out runs/bench-specialists
    python benchmarks/specialists.py --out runs/quick --set data.limit=2000 --set train.epochs=1 \
        --set teacher.train.epochs=1   # a quick look: every command takes these assignments first
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kdistill.cli import main as kdistill

RECIPE = "fashion_mnist_mlp"
SPECIALISTS = {"tops": [0, 2, 4, 6], "footwear": [5, 7, 9]}


def call(*argv: str) -> None:
    if kdistill([str(arg) for arg in argv]) != 0:
        raise SystemExit(f"failed: kdistill {' '.join(map(str, argv))}")


def sets(overrides: list[str], *assignments: str) -> list[str]:
    """``--set`` flags: ``overrides`` (the user's), then the step's own ``assignments``."""
    return [arg for assignment in ("train.progress=false", *overrides, *assignments) for arg in ("--set", assignment)]


def done(path: Path) -> bool:
    """A finished run or a complete store from an earlier invocation: not redone."""
    return (path / "report.json").exists() or (path / "manifest.json").exists()


def accuracy(directory: Path, role: str) -> float:
    report = json.loads((directory / "report.json").read_text())
    return next(model["metrics"]["accuracy"] for model in report["models"] if model["role"] == role)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--top-n", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="a recipe assignment for every run and cache (e.g. data.limit=2000)")
    args = parser.parse_args()
    given = args.overrides
    out = Path(args.out)
    if not done(out / "generalist"):
        call("run", RECIPE, "--out", out / "generalist", "--overwrite", *sets(given))
    stores = [out / "store-generalist"]
    if not done(stores[0]):
        call("cache", RECIPE, "--store", stores[0], "--overwrite",
             *sets(given, f"teacher.path={out / 'generalist' / 'teacher.safetensors'}"))
    for name, classes in SPECIALISTS.items():
        run, store = out / f"specialist-{name}", out / f"store-{name}"
        if not done(run):
            call("run", RECIPE, "--out", run, "--overwrite",
                 *sets(given, f"data.classes={classes}", "train.epochs=1", "compare.scratch=false"))
        if not done(store):
            call("cache", RECIPE, "--store", store, "--overwrite",
                 *sets(given, f"data.classes={classes}", f"teacher.path={run / 'teacher.safetensors'}"))
        stores.append(store)
    merged = out / "store-merged"
    if not done(merged):
        call("cache", "--ensemble", *stores, "--combine", "specialists", "--top-n", args.top_n, "--store", merged,
             "--overwrite")
    for name, store in (("from-generalist", stores[0]), ("from-merged", merged)):
        if not done(out / name):
            call("run", RECIPE, "--out", out / name, "--overwrite",
                 *sets(given, "teacher.model=null", f"teacher.store={store}", "compare.scratch=false"))
    print(f"`python benchmarks/specialists.py {' '.join(sys.argv[1:])}` (one seed)\n")
    print("| teacher | teacher test accuracy | distilled student test accuracy |")
    print("|---|---|---|")
    print(f"| generalist (store) | {accuracy(out / 'from-generalist', 'teacher'):.4f} | "
          f"{accuracy(out / 'from-generalist', 'distilled'):.4f} |")
    print(f"| generalist + specialists {', '.join(SPECIALISTS)} (merged store) | "
          f"{accuracy(out / 'from-merged', 'teacher'):.4f} | {accuracy(out / 'from-merged', 'distilled'):.4f} |")
    for name in SPECIALISTS:
        print(f"specialist {name}: test accuracy on its own (classes + dustbin) task "
              f"{accuracy(out / f'specialist-{name}', 'teacher'):.4f}")
    print(f"scratch twin (online run): {accuracy(out / 'generalist', 'scratch'):.4f}")


if __name__ == "__main__":
    main()
