"""What a sweep trial costs: one trial ÷ one ``kdistill run`` of the student alone, side by side.

The teacher is trained and cached once (as a sweep does) into OUT; then, interleaved over
``--rounds`` rounds, (a) one sweep trial — an Optuna trial of the distilled study at the recipe's
own settings, in a process whose data and store are open, as every trial after the first runs —
and (b) one ``kdistill run`` of the same student taught from the same store with no scratch twin
(``teacher.store``, ``compare.scratch=false``): data loading, model building, training, test
metrics, latency and the report. Medians and their ratio are printed.

    python benchmarks/sweep_trial_cost.py fashion_mnist_mlp --out runs/bench-trial-cost --set data.transfer=null
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import optuna

from kdistill.data import load_task_data
from kdistill.recipe import load_recipe
from kdistill.run import run
from kdistill.sweep.objective import Trainer, shared_teacher, trial_objective
from kdistill.sweep.space import LOSS_SET, load_space


def recipe_values(recipe, space) -> dict:
    """The recipe's own value of every parameter of ``space`` (as Optuna parameters)."""
    values = {}
    for param in space.params:
        if param.path == LOSS_SET:
            values[param.path] = "+".join(recipe.losses)
        elif param.loss is not None and param.loss not in recipe.losses:
            continue
        elif param.path.endswith(".temperature"):
            values[param.path] = recipe.loss_settings(param.loss)["temperature"]
        elif param.path.startswith("weights."):
            values[param.path] = recipe.weights[param.path.split(".")[1]]
        else:
            section, name = param.path.split(".")
            values[param.path] = getattr(getattr(recipe, section), name)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(args.recipe, [*args.overrides, "train.progress=false"])
    data = load_task_data(recipe.data, recipe.task)
    (out / "checkpoints").mkdir(exist_ok=True)
    base = shared_teacher(recipe, data, out)
    space = load_space(recipe, None)
    trainer = Trainer(base, data)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{(out / 'trials.db').resolve()}", direction="maximize")
    values = recipe_values(recipe, space)

    def trial() -> None:
        study.enqueue_trial(values)
        study.optimize(trial_objective(trainer, space, "distilled"), n_trials=1)

    def student_run() -> None:
        run(base, out / "student-run", overwrite=True)

    timings: dict[str, list[float]] = {"trial": [], "run": []}
    for round_index in range(args.rounds):
        order = [("trial", trial), ("run", student_run)]
        for name, job in order if round_index % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            job()
            timings[name].append(time.perf_counter() - started)
    ratios = [t / r for t, r in zip(timings["trial"], timings["run"])]
    print(f"\n`python benchmarks/sweep_trial_cost.py {' '.join(sys.argv[1:])}`\n")
    print("| variant | seconds (median) | per round |\n|---|---:|---|")
    for name, label in (("trial", "sweep trial (Optuna trial, store open)"), ("run", "kdistill run, student alone")):
        print(f"| {label} | {statistics.median(timings[name]):.2f} | {', '.join(f'{v:.2f}' for v in timings[name])} |")
    print(f"\ntrial ÷ run: median {statistics.median(ratios):.3f} (per round {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"last validation {trainer.metric} of the trial {study.trials[-1].value:.4f}")


if __name__ == "__main__":
    main()
