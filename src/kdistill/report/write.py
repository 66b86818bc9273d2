"""Writing the comparison report: ``report.json`` (numbers), ``report.md`` (for people) and
``curves.png`` (validation metric per epoch for every trained model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kdistill.errors import writing
from kdistill.recipe import Recipe
from kdistill.report.embeddings import EMBEDDING_METRICS
from kdistill.report.latency import sizes_cell, sizes_label
from kdistill.report.metrics import HIGHER_IS_BETTER, PRIMARY
from kdistill.report.results import ModelResult


def verdict(metric: str, results: list[ModelResult]) -> dict:
    """Did distillation beat the scratch twin on test ``metric``? Says so plainly either way."""
    by_role = {result.role: result for result in results}
    if "distilled" not in by_role or "scratch" not in by_role:
        return {"metric": metric, "helped": None, "delta": None, "text": "No scratch twin was trained (compare.scratch: false)."}
    distilled, scratch = by_role["distilled"].metrics[metric], by_role["scratch"].metrics[metric]
    delta = distilled - scratch if HIGHER_IS_BETTER[metric] else scratch - distilled
    if delta > 0:
        text = f"Distillation helped: the distilled student beats its scratch twin by {abs(distilled - scratch):.4f} {metric}."
    elif delta == 0:
        text = f"Distillation did not help: the distilled student ties its scratch twin on {metric} ({distilled:.4f})."
    else:
        text = (f"Distillation did not help: the scratch twin beats the distilled student by "
                f"{abs(distilled - scratch):.4f} {metric}. Train the student alone, or revisit the recipe.")
    return {"metric": metric, "helped": delta > 0, "delta": delta, "text": text}


def atomic_write(path: Path, write) -> None:
    with writing(path, "this file"):
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        os.replace(tmp, path)


def _shown(value, template: str) -> str:
    """A table cell: the formatted value, or a dash where there is none (e.g. a store teacher's size)."""
    return "—" if value is None else template.format(value)


def _markdown(recipe: Recipe, report: dict) -> str:
    metric = PRIMARY[recipe.task]
    scored = [metric, *(EMBEDDING_METRICS if recipe.compare.embedding is not None else ())]
    scored += [name for name in (f"class_head_{metric}", f"dist_head_{metric}")  # a two-head model's heads alone
               if any(name in model["metrics"] for model in report["models"])]
    lines = [
        f"# kdistill report: {recipe.name}",
        "",
        f"Backend `{report['backend']}`"
        + (f" (teacher in `{recipe.teacher.backend}`, "
           + ("run on the fly" if recipe.teacher.online else "taught through its cached outputs") + ")"
           if recipe.foreign_teacher else "")
        + f", task `{recipe.task}`, data `{report['data']['name']}` "
        f"({report['data']['train']} train / {report['data']['val']} val / {report['data']['test']} test"
        + (f" / {report['data']['transfer']} transfer" if report["data"]["transfer"] else "")
        + (f"; {report['data']['skipped']} unreadable files skipped" if report["data"].get("skipped") else "") + "), "
        f"losses {', '.join(f'{name}×{weight:g}' for name, weight in recipe.weights.items())}.",
        "",
        f"**{report['verdict']['text']}**",
        "",
        "| model | " + " | ".join(f"test {name}" for name in scored)
        + f" | parameters | size on disk | latency {sizes_label()} (ms) | agreement with teacher | train time (s) |",
        "|---|" + "---|" * (len(scored) + 5),
    ]
    for model in report["models"]:
        cells = (
            *(_shown(model["metrics"].get(name), "{:.4f}") for name in scored),
            _shown(model["parameters"], "{:,}"),
            _shown(None if model["size_bytes"] is None else model["size_bytes"] / 1024, "{:.1f} KiB"),
            sizes_cell(model["latency_ms"]),
            _shown(model["agreement"], "{:.4f}"),
            _shown(model["train_seconds"], "{:.1f}"),
        )
        lines.append(f"| {model['role']} | " + " | ".join(cells) + " |")
    lines += ["", "Metrics on the test split at T = 1; latency is the median of repeated eval-mode forward passes."]
    if report["environment"].get("teacher_ahead"):
        lines += [f"Teacher run ahead of the student (`train.teacher_ahead`): {report['environment']['teacher_ahead']}."]
    if len(scored) > 1:
        lines += [f"probe_accuracy and knn_accuracy: a linear probe and {recipe.compare.neighbours}-nearest-neighbour "
                  f"accuracy on the `{recipe.compare.embedding}` embeddings, fitted on the labeled training split; "
                  "a head never trained on labels scores near chance on the task column."]
    lines += ["Validation curves: `curves.png`. Full numbers: `report.json`. Recipe as run: `recipe.yaml`.", ""]
    if report.get("deploy"):
        lines += _deploy_markdown(report["deploy"], metric)
    return "\n".join(lines)


def _row_key(row: dict) -> tuple[str, str, str]:
    return row["role"], row["format"], row["precision"]


def _deploy_markdown(deploy: dict, metric: str) -> list[str]:
    """The deploy table: every exported file's size, test metric, difference from the framework,
    and latency in its runtime (1 thread and all cores) beside the framework's."""
    lines = [
        "## Deploy",
        "",
        f"| model | format | precision | size on disk | test {metric} (change) | max \\|Δlogit\\| | runtime {sizes_label()}, "
        f"1 thread (ms) | runtime {sizes_label()}, {deploy['threads_all']} threads (ms) | framework {sizes_label()} (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in deploy["rows"]:
        check, latency = row["verification"], row["latency_ms"] or {}
        cells = (row["format"], row["precision"], f"{row['size_bytes'] / 1024:.1f} KiB",
                 f"{check['metrics'][metric]:.4f} ({check['change']:+.4f})", f"{check['max_abs']:.2e}",
                 sizes_cell(latency.get("threads_1")), sizes_cell(latency.get("threads_all")), sizes_cell(row["framework_latency_ms"]))
        lines.append(f"| {row['role']} | " + " | ".join(cells) + " |")
    lines += ["", "Each file was run in its runtime (onnxruntime, the LiteRT interpreter, TensorFlow for a SavedModel) "
              "on the test split and compared with the framework's outputs before it was kept; latencies of the "
              "runtimes and the framework were measured side by side in one run. Files: `export/`.", ""]
    return lines


def _plot(report: dict, path: Path) -> None:
    series = [(model["role"], list(range(1, len(model["val_history"]) + 1)), model["val_history"])
              for model in report["models"] if model["val_history"]]
    line_plot(path, report["recipe"], "epoch", f"validation {report['verdict']['metric']}", series)


def line_plot(path: Path, title: str, xlabel: str, ylabel: str, series: list[tuple[str, list, list]],
              reference: tuple[str, float] | None = None) -> None:
    """A PNG of ``series`` (label, x values, y values), with a dashed horizontal ``reference``
    line (label, y) if given, written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6.4, 4.0))
    for label, xs, ys in series:
        axes.plot(xs, ys, marker="o", markersize=3, label=label)
    if reference is not None:
        axes.axhline(reference[1], linestyle="--", color="grey", label=reference[0])
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    pyplot.close(figure)


def add_deploy(out: Path, recipe: Recipe, deploy: dict) -> dict:
    """Add (or update) the deploy section of the finished report in ``out``: rows of the files
    exported now replace earlier rows of the same model, format and precision; report.md follows."""
    report = json.loads((out / "report.json").read_text())
    fresh = {_row_key(row) for row in deploy["rows"]}
    kept = [row for row in (report.get("deploy") or {}).get("rows", []) if _row_key(row) not in fresh]
    report["deploy"] = {**deploy, "rows": kept + deploy["rows"]}
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(_markdown(recipe, report)))
    atomic_write(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report


def write_report(out: Path, recipe: Recipe, backend_info: dict, data_info: dict, results: list[ModelResult]) -> dict:
    """Write curves.png, report.md and, last, report.json (its presence marks a complete run)."""
    report = {
        "recipe": recipe.name,
        "backend": recipe.backend,
        "task": recipe.task,
        "environment": backend_info,
        "data": data_info,
        "models": [result.to_dict() for result in results],
        "verdict": verdict(recipe.verdict_metric, results),
    }
    _plot(report, out / "curves.png")
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(_markdown(recipe, report)))
    atomic_write(out / "report.json", lambda tmp: tmp.write_text(json.dumps(report, indent=2)))
    return report
