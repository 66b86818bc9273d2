"""``kdistill export RUN_DIR --format onnx|tflite|savedmodel|hf [--quantize int8|float16] [--role ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdistill.export.formats import FORMATS, QUANTIZED


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """The ``export`` verb's arguments."""
    export = verbs.add_parser("export", help="export a finished run's models (ONNX, LiteRT, SavedModel), verified "
                              "in their runtime, and add the deploy table to its report")
    export.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a finished kdistill run")
    export.add_argument("--format", dest="formats", nargs="+", required=True, choices=list(FORMATS), metavar="FORMAT",
                        help=f"one or more of {', '.join(FORMATS)}")
    export.add_argument("--quantize", nargs="+", default=[], choices=list(QUANTIZED), metavar="PRECISION",
                        help="also write post-training quantized files: int8 (dynamic) and/or float16")
    export.add_argument("--role", dest="roles", nargs="+", default=None, metavar="ROLE",
                        help="student, teacher and/or scratch (default: every model the run saved)")
    export.add_argument("--tolerance", nargs="+", default=[], metavar="PRECISION=VALUE",
                        help="largest relative logit difference from the framework allowed, per precision "
                             "(defaults: float32=1e-5, float16=1e-2, int8=none: reported, not checked)")


def run(args: argparse.Namespace) -> int:
    """Export, then print one line per file with its difference from the framework."""
    from kdistill.export.exporter import export_run, parse_tolerances

    directory = Path(args.run_dir)
    report = export_run(directory, args.formats, args.quantize, args.roles, parse_tolerances(args.tolerance))
    for row in report["deploy"]["rows"]:
        check = row["verification"]
        print(f"{row['file']}: {row['role']} {row['precision']}, max |Δlogit| {check['max_abs']:.3g} "
              f"(relative {check['relative']:.3g}), same decision on {check['agreement']:.2%} of "
              f"{check['samples']} test samples, test {next(iter(check['metrics']))} change {check['change']:+.4f}"
              if check["agreement"] is not None else
              f"{row['file']}: {row['role']} {row['precision']}, max |Δ| {check['max_abs']:.3g}")
    print(f"report: {directory / 'report.md'}")
    return 0
