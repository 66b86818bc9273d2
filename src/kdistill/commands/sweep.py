"""``kdistill sweep RECIPE --trials N [--space FILE] [--budget-minutes M] [--jobs J] [--out DIR]``."""

from __future__ import annotations

import argparse
import importlib.util

from kdistill.errors import KdistillError
from kdistill.recipe import Recipe


def add_parser(verbs: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``sweep`` verb and its options."""
    sweep = verbs.add_parser("sweep", help="tune distillation with Optuna against an equally tuned scratch twin")
    sweep.add_argument("recipe", nargs="?", help="YAML file or built-in name (default: digits_mlp)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe field before the sweep (repeatable)")
    sweep.add_argument("--trials", type=int, required=True, help="trials per study (distilled, and as many for scratch)")
    sweep.add_argument("--space", metavar="FILE", help="YAML search space: dotted recipe fields to {low, high[, log]} "
                       "or {choices: [...]}, added to the default space (FIELD: null drops a default)")
    sweep.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                       help="stop starting distilled trials after half of M minutes; the twin gets as many trials")
    sweep.add_argument("--jobs", type=int, default=1, help="trials in parallel processes (default 1)")
    sweep.add_argument("--out", help="sweep directory (default: runs/sweep-NAME-TIMESTAMP); rerun to resume")
    return sweep


def main(recipe: Recipe, args: argparse.Namespace) -> int:
    """Run the sweep and print its verdict and where the report is."""
    if importlib.util.find_spec("optuna") is None:
        raise KdistillError("kdistill sweep needs Optuna: pip install 'kdistill[sweep]'")
    from kdistill.sweep.job import sweep

    directory, summary = sweep(recipe, args.trials, args.space, args.out, args.jobs, args.budget_minutes)
    print(f"{summary['verdict']['text']}\nreport: {directory / 'sweep.md'}\nbest recipe: {directory / 'best.yaml'}")
    return 0
