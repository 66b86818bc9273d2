"""The deployed students: a recipe run per backend with ``output.export`` (ONNX, and LiteRT where
the backend exports it: Keras, JAX) and ``output.quantize: [int8, float16]``, then, from each run's report, the exported
student's agreement with the framework on the test split and the deploy table: size on disk,
test accuracy, and latency in the runtime at batch 1 and 256 in ms and as a ratio to the framework's
own forward of the same model (measured side by side in the run), plus teacher ÷ student latency in
the runtime beside the same ratio in the framework (does the deployment keep the speed-up?).

    python benchmarks/export_deploy.py                                   # digits default, torch
    python benchmarks/export_deploy.py fashion_mnist_cnn --backends torch keras jax \\
        --set train.epochs=2 --set teacher.train.epochs=2                # ONNX agreement per backend
    python benchmarks/export_deploy.py --backends torch keras --out runs/deploy --print-only  # the tables again
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from kdistill import backends
from kdistill.recipe import load_recipe
from kdistill.run import run


def _latency(runtime_ms: float, framework_ms: float) -> str:
    """A runtime latency in ms, with its ratio to the framework's forward of the same model."""
    return f"{runtime_ms:.3g} ({runtime_ms / framework_ms:.2g}×)"


def table(report: dict) -> list[str]:
    """The deploy rows as markdown: latency in the runtime (ms), and ÷ the framework's of the same model."""
    deploy = report["deploy"]
    lines = [f"| model | format | precision | size (KiB) | test accuracy | runtime ms (÷ framework) b=1, 1 thread | "
             f"b=256, 1 thread | b=1, {deploy['threads_all']} threads | b=256, {deploy['threads_all']} threads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in deploy["rows"]:
        latency, framework = row["latency_ms"], row["framework_latency_ms"]
        cells = [row["role"], row["format"], row["precision"], f"{row['size_bytes'] / 1024:.1f}",
                 f"{row['verification']['metrics']['accuracy']:.4f}"]
        cells += ["—"] * 4 if latency is None else [_latency(latency[threads][f"batch_{size}"], framework[f"batch_{size}"])
                                                     for threads in ("threads_1", "threads_all") for size in (1, 256)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def speedups(report: dict) -> list[str]:
    """Teacher ÷ distilled latency, float32 ONNX, in onnxruntime and in the framework."""
    rows = {(row["role"], row["format"], row["precision"]): row for row in report["deploy"]["rows"]}
    teacher, student = rows.get(("teacher", "onnx", "float32")), rows.get(("distilled", "onnx", "float32"))
    if teacher is None or student is None:
        return []
    lines = []
    for size in (1, 256):
        key = f"batch_{size}"
        runtime = {threads: teacher["latency_ms"][threads][key] / student["latency_ms"][threads][key]
                   for threads in ("threads_1", "threads_all")}
        framework = teacher["framework_latency_ms"][key] / student["framework_latency_ms"][key]
        lines.append(f"teacher ÷ student latency, b={size}: onnxruntime {runtime['threads_1']:.2f} (1 thread), "
                     f"{runtime['threads_all']:.2f} (all cores); framework {framework:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=None, help="recipe (default: the built-in digits_mlp)")
    parser.add_argument("--backends", nargs="+", default=["torch"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="keep the runs in OUT/BACKEND (default: a temporary directory)")
    parser.add_argument("--print-only", action="store_true", help="print the tables of the finished runs in --out again")
    args = parser.parse_args()
    if args.print_only and not args.out:
        parser.error("--print-only reads the runs in --out")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        for backend in args.backends:
            formats = "[onnx, tflite]" if backends.supports(backend, backends.EXPORT_TFLITE) else "[onnx]"
            recipe = load_recipe(args.recipe, [f"backend={backend}", "train.progress=false", f"output.export={formats}",
                                               "output.quantize=[int8, float16]", *args.overrides])
            if args.print_only:
                report = json.loads((root / backend / "report.json").read_text())
            else:
                _, report = run(recipe, root / backend, overwrite=True)
            for row in report["deploy"]["rows"]:
                if row["precision"] == "float32" and row["role"] == "distilled":
                    check = row["verification"]
                    print(f"{backend} {row['file']}: test accuracy {check['metrics']['accuracy']:.4f} "
                          f"(framework {check['framework_metrics']['accuracy']:.4f}), same prediction on "
                          f"{check['agreement']:.2%} of {check['samples']} test images, max |Δlogit| {check['max_abs']:.3g}")
            print("\n".join(["", f"{recipe.name} on {backend}:", *table(report), "", *speedups(report), ""]))


if __name__ == "__main__":
    main()
