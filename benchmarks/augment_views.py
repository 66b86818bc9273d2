"""Online teacher vs cached augmentation views (Beyer et al. 2022, "Knowledge distillation: A good
teacher is patient and consistent"), on Fashion-MNIST with random shifts and flips.

One teacher, trained once with the augmentation. Its student is distilled
- online: the teacher runs on every batch, on exactly the view the student sees (a fresh view of
  every sample in every epoch);
- offline from stores of K cached views per sample (``kdistill cache --views K``), replaying one
  of the K views each epoch: the student meets only K distinct views of a sample;
- offline from a store of the plain samples with the student trained *without* augmentation
  (kdistill refuses a store without views for an augmenting run: its targets would belong to
  inputs the student never sees).
Every run is an ordinary ``kdistill run`` whose report stays in OUT/NAME.

    python benchmarks/augment_views.py --out runs/bench-augment --views 1 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kdistill.cli import main as cli
from kdistill.recipe import load_recipe
from kdistill.run import run

AUGMENT = "data.augment={shift: 2, flip: true}"


def finished(directory: Path) -> dict | None:
    if (directory / "report.json").exists() and not (directory / "INCOMPLETE").exists():
        return json.loads((directory / "report.json").read_text())
    return None


def run_once(recipe: str, overrides: list[str], directory: Path) -> dict:
    return finished(directory) or run(load_recipe(recipe, overrides), directory, resume=directory.exists())[1]


def accuracy(report: dict, role: str) -> float:
    return next(model["metrics"]["accuracy"] for model in report["models"] if model["role"] == role)


def seconds(report: dict, role: str) -> float:
    return next(model["train_seconds"] for model in report["models"] if model["role"] == role)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fashion_mnist_mlp")
    parser.add_argument("--out", required=True)
    parser.add_argument("--views", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out)
    base = [*args.overrides, "train.progress=false"]
    online = run_once(args.recipe, [*base, AUGMENT], out / "online")
    teacher = f"teacher.path={out / 'online' / 'teacher.safetensors'}"
    epochs = load_recipe(args.recipe, base).train.epochs
    rows = [("online (teacher on every batch)", f"{epochs} (fresh)", accuracy(online, "distilled"),
             seconds(online, "distilled"), "—")]
    stores = [(f"offline, {k} cached view(s)", str(k), [AUGMENT], ["--views", str(k)], f"views-{k}") for k in args.views]
    stores.append(("offline, plain samples, student not augmented", "0", [], [], "plain"))
    for label, views, augment, flags, name in stores:
        store = out / f"store-{name}"
        started = time.perf_counter()
        if not (store / "manifest.json").exists():
            argv = ["cache", args.recipe, "--store", str(store), *flags]
            for assignment in (*base, *augment, teacher):
                argv += ["--set", assignment]
            if cli(argv) != 0:
                raise SystemExit(f"kdistill cache failed for {name}")
        cache_seconds = time.perf_counter() - started
        report = run_once(args.recipe, [*base, *augment, "teacher.model=null", f"teacher.store={store}",
                                        "compare.scratch=false"], out / name)
        rows.append((label, views, accuracy(report, "distilled"), seconds(report, "distilled"), f"{cache_seconds:.1f}"))
    print(f"teacher {accuracy(online, 'teacher'):.4f}, scratch twin (augmented) {accuracy(online, 'scratch'):.4f}")
    print("| student taught by | distinct views per sample | distilled accuracy | train s | cache s |")
    print("|---|---|---|---|---|")
    for label, views, acc, train, cache in rows:
        print(f"| {label} | {views} | {acc:.4f} | {train:.1f} | {cache} |")


if __name__ == "__main__":
    main()
