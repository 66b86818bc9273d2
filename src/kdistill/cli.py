"""Command line: ``kdistill run | validate | recipes``. User errors print one clear message and exit 2."""

from __future__ import annotations

import argparse
import sys

from kdistill.errors import KdistillError
from kdistill.recipe import builtin_recipes, load_recipe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdistill", description="Knowledge distillation for PyTorch, Keras and JAX.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="distill a student and write the comparison report")
    validate = verbs.add_parser("validate", help="check a recipe and print it with every default filled in")
    for verb in (run, validate):
        verb.add_argument("recipe", nargs="?", help="YAML file or built-in name (default: digits_mlp)")
        verb.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a recipe field, e.g. --set train.epochs=5 (repeatable)")
    run.add_argument("--out", help="output directory (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its checkpoints")
    run.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    verbs.add_parser("recipes", help="list the built-in recipes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "recipes":
            print("\n".join(builtin_recipes()))
            return 0
        recipe = load_recipe(args.recipe, args.overrides)
        if args.verb == "validate":
            print(recipe.to_yaml(), end="")
            return 0
        from kdistill.run import run

        directory, report = run(recipe, args.out, args.resume, args.overwrite)
    except KdistillError as error:
        print(f"kdistill: error: {error}", file=sys.stderr)
        return 2
    print(f"{report['verdict']['text']}\nreport: {directory / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
