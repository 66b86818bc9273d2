"""``kdistill compare``: one recipe on several frameworks, one table.

The recipe runs once per backend — an ordinary ``kdistill run`` each, into ``OUT/<backend>/`` —
and ``OUT/compare.md`` (for people) and ``OUT/compare.json`` (for tools) put the reports side by
side: the distilled student's primary test metric, its scratch twin's, the teacher's, the gain,
mean epoch time, parameters, size on disk and latency.

Everything that can be checked is checked before the first run starts: the backend names, that
each backend's framework is installed, the recipe as validated for each backend (some fields are
for some backends only), the output directories, and every backend's data and models, built and
checked as ``kdistill run`` checks them (:func:`kdistill.run.prepare`). While a compare is under way ``OUT`` holds an
``INCOMPLETE`` file (with the error, if it failed); ``compare.json`` is written last, after
``compare.md``, both atomically, so a directory with ``compare.json`` and no ``INCOMPLETE`` is a
finished compare.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from kdistill import backends as registry
from kdistill.errors import KdistillError
from kdistill.recipe import Recipe, recipe_from_dict
from kdistill.report.latency import sizes_cell, sizes_label
from kdistill.store.writer import atomic_write

BACKENDS = registry.NAMES
MARKER = "INCOMPLETE"
ROLES = ("distilled", "scratch", "teacher")


def check_backends(backends: Sequence[str]) -> list[str]:
    """The backends to compare, in the order given: each one of :data:`BACKENDS`, none twice."""
    if not backends:
        raise KdistillError(f"--backends: name at least one of {', '.join(BACKENDS)}")
    for backend in backends:
        registry.info(backend, "--backends")
    repeated = sorted({backend for backend in backends if list(backends).count(backend) > 1})
    if repeated:
        raise KdistillError(f"--backends: {', '.join(map(repr, repeated))} given more than once; name each backend once")
    return list(backends)


def check_installed(backends: Sequence[str]) -> None:
    """Refuse, before anything runs, a backend whose framework is not installed, naming the pip extra."""
    for backend in backends:
        missing = [module for module in registry.info(backend).framework_modules()
                   if importlib.util.find_spec(module) is None]
        if missing:
            raise KdistillError(f"--backends: {backend!r} needs {', '.join(missing)}, which is not installed; "
                                f"pip install 'kdistill[{registry.info(backend).extra}]' (or leave {backend} out of --backends)")


def backend_recipes(recipe: Recipe, backends: Sequence[str]) -> dict[str, Recipe]:
    """The recipe once per backend, each validated afresh (a field may be allowed for one backend
    and not another, e.g. ``data.augment``); the error names the backend."""
    recipes = {}
    for backend in backends:
        try:
            recipes[backend] = recipe_from_dict(recipe.model_dump(mode="json"), [f"backend={backend}"])
        except KdistillError as error:
            raise KdistillError(f"--backends {backend}: the recipe does not hold for this backend: {error}") from None
    return recipes


def compare_dir(recipe: Recipe, out: str | Path | None, overwrite: bool) -> Path:
    """Where the compare writes: --out, else output.dir, else runs/compare-NAME-TIMESTAMP. A
    finished compare is never overwritten unless asked."""
    chosen = out or recipe.output.dir
    if chosen is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"compare-{recipe.name}-{stamp}"
    path = Path(chosen)
    if path.exists() and not path.is_dir():
        raise KdistillError(f"--out {str(path)!r} exists and is not a directory")
    if (path / "compare.json").exists() and not (path / MARKER).exists() and not overwrite:
        raise KdistillError(f"--out {str(path)!r} already holds a finished compare; pick another directory or "
                            "pass --overwrite")
    return path


def _framework(report: dict) -> str:
    """The framework and its version as the run's report recorded them, e.g. ``keras 3.15.1 (tensorflow)``."""
    environment, backend = report.get("environment", {}), report["backend"]
    shown = f"{backend} {environment.get(backend, '?')}"
    return shown + (f" ({environment['keras_backend']})" if "keras_backend" in environment else "")


def compare_row(backend: str, report: dict) -> dict:
    """One framework's row, every value taken from its ``report.json``: the primary test metric of
    the distilled student, scratch twin and teacher (None where a model is absent), the gain
    (the report's verdict delta: positive when distillation helped, for any metric direction),
    and the distilled student's mean epoch time (``train_seconds`` over its epochs), parameters,
    size on disk and latency."""
    metric = report["verdict"]["metric"]
    models = {model["role"]: model for model in report["models"]}
    distilled = models["distilled"]
    epochs = len(distilled["val_history"])
    return {
        "backend": backend,
        "framework": _framework(report),
        "metric": metric,
        **{role: models[role]["metrics"][metric] if role in models else None for role in ROLES},
        "gain": report["verdict"]["delta"],
        "epochs": epochs,
        "epoch_seconds": distilled["train_seconds"] / epochs if epochs and distilled["train_seconds"] is not None
        else None,
        "parameters": distilled["parameters"],
        "size_bytes": distilled["size_bytes"],
        "latency_ms": distilled["latency_ms"],
    }


def metric_gaps(rows: list[dict]) -> dict[str, dict]:
    """Per role (distilled, scratch, teacher), the spread of the metric between frameworks:
    ``{"gap": high − low, "high": backend, "low": backend}`` (None where a row has no value)."""
    gaps = {}
    for role in ROLES:
        values = {row["backend"]: row[role] for row in rows}
        if any(value is None for value in values.values()):
            gaps[role] = None
            continue
        high, low = max(values, key=values.get), min(values, key=values.get)
        gaps[role] = {"gap": values[high] - values[low], "high": high, "low": low}
    return gaps


def gap_line(summary: dict) -> str:
    """The sentence that states the largest metric gap between frameworks."""
    metric, gaps, rows = summary["metric"], summary["gaps"], {row["backend"]: row for row in summary["rows"]}
    if len(rows) < 2:
        return "One framework only: no gap between frameworks to state."
    known = {role: gap for role, gap in gaps.items() if gap is not None}
    role = max(known, key=lambda name: known[name]["gap"])
    largest = known[role]
    others = ", ".join(f"{name} {gap['gap']:.4f}" for name, gap in known.items() if name != role)
    return (f"Largest {metric} gap between frameworks: {largest['gap']:.4f}, {role} "
            f"({largest['high']} {rows[largest['high']][role]:.4f} vs {largest['low']} "
            f"{rows[largest['low']][role]:.4f})" + (f"; {others}." if others else "."))


def _cell(value, template: str) -> str:
    return "—" if value is None else template.format(value)


def compare_markdown(summary: dict) -> str:
    """``compare.md``: one row per framework, the gap line, and what the columns mean."""
    metric = summary["metric"]
    lines = [
        f"# kdistill compare: {summary['recipe']}",
        "",
        f"Task `{summary['task']}`, test {metric} at T = 1; one `kdistill run` per framework, each report in "
        + ", ".join(f"`{row['backend']}/`" for row in summary["rows"]) + ".",
        "",
        f"| framework | distilled {metric} | scratch {metric} | teacher {metric} | distilled − scratch "
        f"| epoch (s) | parameters | size on disk | latency {sizes_label()} (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        cells = (
            row["framework"],
            _cell(row["distilled"], "{:.4f}"),
            _cell(row["scratch"], "{:.4f}"),
            _cell(row["teacher"], "{:.4f}"),
            _cell(row["gain"], "{:+.4f}"),
            _cell(row["epoch_seconds"], "{:.3f}"),
            _cell(row["parameters"], "{:,}"),
            _cell(None if row["size_bytes"] is None else row["size_bytes"] / 1024, "{:.1f} KiB"),
            sizes_cell(row["latency_ms"]),
        )
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        gap_line(summary),
        "",
        "distilled − scratch is positive when distillation helped (for RMSE, when it lowered the error). "
        "Parameters, size and latency are the distilled student's. Epoch time is its training seconds over "
        "its epochs (validation excluded; on JAX the first epoch includes compilation); the frameworks ran "
        "one after another, not interleaved, so read it as a rough guide: speed ratios measured side by side "
        "are in `benchmarks/frameworks.py`.",
        f"Machine: {summary['machine']['platform']}, {summary['machine']['cpus']} CPUs, "
        f"Python {summary['machine']['python']}. Full numbers: `compare.json`.",
        "",
    ]
    return "\n".join(lines)


def write_compare(directory: Path, summary: dict) -> None:
    """``compare.md``, then ``compare.json`` (its presence marks a finished compare), each atomically."""
    atomic_write(directory / "compare.md", compare_markdown(summary).encode())
    atomic_write(directory / "compare.json", json.dumps(summary, indent=2).encode())


def summarize(recipe: Recipe, reports: dict[str, dict]) -> dict:
    """What ``compare.json`` holds: the recipe, task and metric, one row per backend, the gaps."""
    rows = [compare_row(backend, report) for backend, report in reports.items()]
    return {
        "recipe": recipe.name,
        "task": recipe.task,
        "metric": rows[0]["metric"],
        "backends": list(reports),
        "rows": rows,
        "gaps": metric_gaps(rows),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def compare(recipe: Recipe, backends: Sequence[str] = BACKENDS, out: str | Path | None = None,
            overwrite: bool = False) -> tuple[Path, dict]:
    """Run ``recipe`` once per backend into ``OUT/<backend>/`` and write the comparison; returns
    the directory and the summary (``compare.json``'s content). All checks come first."""
    from kdistill.run import prepare

    backends = check_backends(backends)
    check_installed(backends)
    recipes = backend_recipes(recipe, backends)
    directory = compare_dir(recipe, out, overwrite)
    # every backend's data, models and output directory checked before the first run writes anything
    runs = {backend: prepare(backend_recipe, directory / backend, overwrite=overwrite)
            for backend, backend_recipe in recipes.items()}
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / MARKER
    marker.write_text("kdistill compare in progress (or interrupted); compare.json is written last\n")
    for stale in ("compare.json", "compare.md"):
        (directory / stale).unlink(missing_ok=True)
    reports = {}
    try:
        for backend, prepared in runs.items():
            reports[backend] = prepared.execute()[1]
        summary = summarize(recipe, reports)
        write_compare(directory, summary)
    except BaseException as error:
        marker.write_text(f"kdistill compare failed: {type(error).__name__}: {error}\n"
                          f"finished: {', '.join(reports) or 'none'}; run the same command with --overwrite to start again\n")
        raise
    marker.unlink()
    return directory, summary
