"""Command line: ``kdistill run | compare | sweep | cache | convert | export | validate | recipes``. User errors print one clear message and exit 2."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from kdistill.backends import NAMES as BACKENDS
from kdistill.commands import export as export_command
from kdistill.commands import sweep as sweep_command
from kdistill.errors import KdistillError, reading
from kdistill.lock import exclusive
from kdistill.ranks import is_main_process
from kdistill.recipe import Recipe, builtin_recipes, load_recipe


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdistill", description="Knowledge distillation for PyTorch, Keras and JAX.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="distill a student and write the comparison report")
    validate = verbs.add_parser("validate", help="check a recipe and print it with every default filled in")
    compare = verbs.add_parser("compare", help="run one recipe on several frameworks and write one table")
    for verb in (run, validate, compare):
        verb.add_argument("recipe", nargs="?", help="YAML file or built-in name (default: digits_mlp)")
        verb.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a recipe field, e.g. --set train.epochs=5 (repeatable)")
    run.add_argument("--out", help="output directory (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in --out from its checkpoints")
    run.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    compare.add_argument("--backends", nargs="+", default=list(BACKENDS), metavar="BACKEND",
                         help=f"frameworks to run, in this order: {' '.join(BACKENDS)} (default: all three)")
    compare.add_argument("--out", help="output directory: one run per backend in OUT/BACKEND, then "
                         "OUT/compare.md and OUT/compare.json (default: runs/compare-NAME-TIMESTAMP)")
    compare.add_argument("--overwrite", action="store_true", help="replace a finished compare and its runs in --out")
    cache = verbs.add_parser("cache", help="write a trained teacher's outputs to a soft-target store")
    cache.add_argument("recipe", nargs="?", help="recipe whose data and teacher (teacher.path) to cache")
    cache.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    cache.add_argument("--store", required=True, help="store directory (resumes an interrupted cache there)")
    cache.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    cache.add_argument("--top-k", type=int, default=None, help="keep only the k largest logits (+ tail mass)")
    cache.add_argument("--views", type=int, default=None, help="also cache K augmented views per sample "
                       "(the recipe's data.augment), which training with that augmentation replays")
    cache.add_argument("--shard-size", type=int, default=8192, help="samples per shard")
    cache.add_argument("--batch-size", type=int, default=1024)
    cache.add_argument("--overwrite", action="store_true", help="replace a complete store")
    cache.add_argument("--from-predictions", metavar="FILE", help="import a black-box teacher's predictions "
                       "(.npy/.npz/.csv/.parquet, ids in an 'id' column or row order) instead of running teacher.path")
    cache.add_argument("--kind", choices=("logits", "probs"), default="logits", help="what --from-predictions holds")
    cache.add_argument("--ensemble", nargs="+", metavar="STORE", help="combine these complete stores into --store")
    cache.add_argument("--combine", default="mean_probs", help="ensemble combination: mean_probs (default), mean_logits, "
                       "or specialists (first store the generalist, then specialists cached with data.classes)")
    cache.add_argument("--top-n", type=int, default=1, help="specialists: a specialist is active for a sample when it "
                       "covers one of the generalist's top-n classes")
    cache.add_argument("--weights", type=float, nargs="+", help="ensemble member weights (default: equal)")
    cache.add_argument("--temperature", type=float, default=1.0, help="T of mean_probs: train the student at this T")
    for verb in (run, cache):
        verb.add_argument("--nproc", type=int, default=None, metavar="N",
                          help="data-parallel on N processes of this machine (torchrun; backend torch)")
        verb.add_argument("--trust-pickle", action="store_true", help="load a pickled torch .pt teacher.path or "
                          "student.path (unpickling runs the code it holds; same as --set teacher.trust_pickle=true)")
    convert = verbs.add_parser("convert", help="turn a trusted pickled torch model (.pt) into NAME.safetensors + "
                               "NAME.json, which kdistill loads without running code from the file")
    convert.add_argument("file", help="the pickled .pt file: a whole torch.nn.Module or its state dict")
    convert.add_argument("--out", required=True, metavar="NAME", help="write NAME.safetensors and NAME.json")
    convert.add_argument("--model", required=True, help="the factory that builds the module: a zoo name "
                         "(mlp, cnn, user_item) or pkg.module:factory")
    convert.add_argument("--kwargs", default="{}", help="the factory's keyword arguments, a YAML mapping, "
                         "e.g. '{input_shape: [64], output_dim: 10, hidden: [256]}'")
    convert.add_argument("--trust-pickle", action="store_true", help="required: unpickling runs the code the file holds")
    export_command.add_parser(verbs)
    sweep_command.add_parser(verbs)
    verbs.add_parser("recipes", help="list the built-in recipes")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    args = _parser().parse_args(argv)
    try:
        if args.verb == "recipes":
            print("\n".join(builtin_recipes()))
            return 0
        if args.verb == "convert":
            return _convert(args)
        if args.verb == "export":
            return export_command.run(args)
        recipe = load_recipe(args.recipe, args.overrides)
        if getattr(args, "trust_pickle", False):
            recipe = recipe.model_copy(update={role: getattr(recipe, role).model_copy(update={"trust_pickle": True})
                                               for role in ("teacher", "student")})
        if args.verb == "validate":
            print(recipe.to_yaml(), end="")
            return 0
        if recipe.self_training is not None and (args.verb != "run" or getattr(args, "nproc", None) is not None):
            raise KdistillError(f"self_training: rounds run with kdistill run (one process), not kdistill {args.verb}"
                                + (" --nproc" if args.verb == "run" else "")
                                + "; drop self_training from the recipe for this verb")
        if args.verb == "sweep":
            return sweep_command.main(recipe, args)
        if args.verb == "cache":  # caching runs the teacher, in its own framework
            recipe = recipe.in_teacher_framework()
        if getattr(args, "nproc", None) is not None:
            return _launch(recipe, args, argv)
        if args.verb == "cache":
            return _cache(recipe, args)
        if args.verb == "compare":
            return _compare(recipe, args)
        if recipe.self_training is not None:
            from kdistill.self_training import SUMMARY, run_rounds

            directory, report = run_rounds(recipe, args.out or recipe.output.dir, args.resume, args.overwrite)
            written = f"{SUMMARY}.md"
        else:
            from kdistill.run import run

            directory, report = run(recipe, args.out, args.resume, args.overwrite)
            written = "report.md"
    except KdistillError as error:
        print(f"kdistill: error: {error}", file=sys.stderr)
        return 2
    if report:  # only rank 0 of a data-parallel job has one
        print(f"{report['verdict']['text']}\nreport: {directory / written}")
    return 0


def _compare(recipe: Recipe, args: argparse.Namespace) -> int:
    from kdistill.compare import compare, gap_line

    directory, summary = compare(recipe, args.backends, args.out, args.overwrite)
    for row in summary["rows"]:
        print(f"{row['framework']}: distilled {row['metric']} {row['distilled']:.4f}")
    print(f"{gap_line(summary)}\ntable: {directory / 'compare.md'}")
    return 0


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` less ``flag VALUE`` and ``flag=VALUE``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return kept


def _launch(recipe: Recipe, args: argparse.Namespace, argv: list[str]) -> int:
    """``--nproc N``: the same command in N torchrun processes of this machine (``run`` with its
    output directory resolved once); a failed process ends the job with a clear error."""
    from kdistill import backends

    if not backends.supports(recipe.backend, backends.NPROC):
        raise KdistillError(f"--nproc: runs of several processes are for backend(s) "
                            f"{', '.join(backends.with_capability(backends.NPROC))}, not {recipe.backend!r}")
    if recipe.foreign_teacher:
        raise KdistillError(f"--nproc: a teacher of another framework (teacher.backend {recipe.teacher.backend!r}) is "
                            "trained in one process; cache it first (kdistill cache) and give teacher.store")
    from kdistill.data import load_task_data
    from kdistill.torch.distributed import check_last_batch, launch

    if args.verb == "cache" and (args.ensemble or args.from_predictions):
        raise KdistillError("--nproc: parallel caching runs a teacher (teacher.path), not --ensemble or --from-predictions")
    argv = _without(argv, "--nproc")
    if args.verb == "run":
        from kdistill.run import output_dir

        directory = output_dir(recipe, args.out, args.resume, args.overwrite)
        train_samples = len(load_task_data(recipe.data, recipe.task).train)
        for config in (recipe.train, recipe.teacher_training()):
            check_last_batch(train_samples, config.batch_size, args.nproc)
        argv = [*_without(argv, "--out"), "--out", str(directory)]
        again = f"the same command plus --out {directory} --resume"
    else:
        from kdistill.store.writer import check_store_dir

        directory, again = Path(args.store), "the same command: finished shards are kept"
        check_store_dir(directory)
    with exclusive(directory, "--store" if args.verb == "cache" else "--out", f"kdistill {args.verb}"):
        pass  # refused at once while another process writes it; its rank 0 holds the lock while the job writes
    code = launch(args.nproc, argv)
    if code != 0:
        raise KdistillError(f"--nproc {args.nproc}: a process of the job failed (exit code {code}; its error is "
                            f"above) and torchrun stopped the others; {directory} keeps what was finished: "
                            f"resume with {again}")
    return 0


def _cache(recipe: Recipe, args: argparse.Namespace) -> int:
    for name in ("shard_size", "batch_size", "views"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise KdistillError(f"--{name.replace('_', '-')}: {getattr(args, name)} must be >= 1")
    if args.views is not None and (args.ensemble or args.from_predictions):
        raise KdistillError("--views: views are cached by running the teacher (teacher.path), not with "
                            "--ensemble or --from-predictions")
    from kdistill.store.writer import check_store_dir

    store = Path(args.store)
    check_store_dir(store)  # before the lock creates it
    with exclusive(store, "--store", "kdistill cache") if is_main_process() else contextlib.nullcontext():
        return _cache_into(recipe, args)


def _cache_into(recipe: Recipe, args: argparse.Namespace) -> int:
    options = {"dtype": args.dtype, "k": args.top_k, "shard_size": args.shard_size, "overwrite": args.overwrite}
    if args.ensemble:  # combines stores: needs no data
        from kdistill.store.ensemble import ensemble_stores

        count = ensemble_stores([Path(member) for member in args.ensemble], Path(args.store), combination=args.combine,
                                weights=args.weights, temperature=args.temperature, top_n=args.top_n, **options)
        print(f"combined {len(args.ensemble)} teachers for {count} samples into {args.store}")
        return 0
    from kdistill.data import load_task_data

    data = load_task_data(recipe.data, recipe.task)
    if args.from_predictions:
        from kdistill.store.predictions import cache_predictions

        count = cache_predictions(data, Path(args.from_predictions), args.kind, Path(args.store), **options)
        print(f"imported {count} predictions into {args.store}")
        return 0
    from kdistill import backends
    from kdistill.store.cache import cache_teacher

    options |= {"batch_size": args.batch_size, "views": args.views}
    if backends.supports(recipe.backend, backends.NPROC):  # one process, or one part per process of --nproc
        backends.import_module(recipe.backend, "cache").cache_teacher(recipe, data, Path(args.store), **options)
    else:
        cache_teacher(recipe, data, Path(args.store), backends.load(recipe.backend), **options)
    return 0


def _convert(args: argparse.Namespace) -> int:
    """``kdistill convert FILE.pt --out NAME --model FACTORY [--kwargs YAML] --trust-pickle``."""
    import json

    import yaml

    if not args.trust_pickle:
        raise KdistillError(f"convert: unpickling {args.file} runs whatever code it holds; pass --trust-pickle if you "
                            "trust the file (kdistill opens it only then)")
    with reading("--kwargs", "a YAML mapping"):
        kwargs = yaml.safe_load(args.kwargs)
    kwargs = {} if kwargs is None else kwargs
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        kwargs = None
    if not isinstance(kwargs, dict):
        raise KdistillError(f"--kwargs: {args.kwargs!r} is not a mapping of plain values, e.g. "
                            "'{input_shape: [64], output_dim: 10}'")
    from kdistill import backends

    stem = Path(args.out)
    stem = stem.with_suffix("") if stem.suffix in (".safetensors", ".json") else stem
    weights = backends.import_module("torch", "models").convert_pickle(Path(args.file), stem, args.model, kwargs)
    trust = f", with teacher.model: '{args.model}' beside it (a sidecar's import path runs only when the recipe " \
            "names it)" if ":" in args.model else ""
    print(f"wrote {weights} and {weights.with_suffix('.json')}: give {weights} as teacher.path or student.path{trust}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
