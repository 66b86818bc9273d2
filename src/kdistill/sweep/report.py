"""The sweep report: the verdict (first line of ``sweep.md``), ``best.yaml`` (the best distilled
recipe, runnable with ``kdistill run``), ``trials.csv`` (every trial of both studies), three plots
(``trials.png``: validation metric over trials; ``importance.png``: parameter importance by
Optuna's default evaluator; ``temperature_weight.png``: temperature × distillation weight) and,
written last, ``sweep.json``."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import warnings
from pathlib import Path
from typing import Any

from kdistill.report.metrics import HIGHER_IS_BETTER
from kdistill.report.write import atomic_write
from kdistill.sweep.objective import ROLES

PLOTS = ("trials.png", "importance.png", "temperature_weight.png")


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(metric: str, test: dict[str, list[float]], trials: int) -> dict[str, Any]:
    """Did the best distilled student beat the equally tuned scratch twin on test (mean over seeds)? A
    lead no larger than the seeds' spread (the larger standard deviation) is not called help:
    ``helped`` is a lead of any size, ``beyond_spread`` one past the spread."""
    distilled, scratch = (statistics.mean(test[role]) for role in ROLES)
    delta = distilled - scratch if HIGHER_IS_BETTER[metric] else scratch - distilled
    means = (f"mean of {len(test['distilled'])} seeds: distilled {distilled:.4f} ± {_spread(test['distilled']):.4f}, "
             f"scratch {scratch:.4f} ± {_spread(test['scratch']):.4f}")
    spread = max(_spread(test["distilled"]), _spread(test["scratch"]))
    if delta > spread:
        text = (f"Distillation helped: the best distilled student beats the equally tuned scratch twin by "
                f"{abs(distilled - scratch):.4f} test {metric} ({means}; {trials} trials each).")
    elif delta > 0:
        text = (f"Distillation did not clearly help: the best distilled student leads the equally tuned scratch twin "
                f"by {abs(distilled - scratch):.4f} test {metric}, within the spread of the seeds ({means}; "
                f"{trials} trials each): no setting found beats it beyond that noise.")
    else:
        text = (f"Distillation did not help: no setting found in {trials} trials beat the equally tuned scratch twin "
                f"on test {metric} ({means}). Train the student alone, or widen the search.")
    return {"metric": metric, "helped": delta > 0, "beyond_spread": delta > spread, "delta": delta, "distilled": distilled, "scratch": scratch,
            "text": text}


def trial_rows(studies: dict[str, Any], spaces: dict[str, Any]) -> list[dict[str, Any]]:
    """Every trial of both studies: role, number, state, validation value, epochs run, seconds, values."""
    rows = []
    for role in ROLES:
        for trial in studies[role].get_trials(deepcopy=False):
            rows.append({"role": role, "number": trial.number, "state": trial.state.name.lower(),
                         "value": trial.value, "epochs": max(trial.intermediate_values, default=-1) + 1,
                         "seconds": trial.user_attrs.get("seconds"),
                         "params": spaces[role].decode(trial.params)})
    return rows


def _cell(value: Any) -> Any:
    """A CSV cell: numbers and names as they are, lists and mappings as JSON."""
    return value if isinstance(value, (int, float, str)) else json.dumps(value)


def _csv(rows: list[dict[str, Any]], paths: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["role", "number", "state", "value", "epochs", "seconds", *paths])
    for row in rows:
        writer.writerow([row["role"], row["number"], row["state"], row["value"], row["epochs"],
                         None if row["seconds"] is None else round(row["seconds"], 3),
                         *(_cell(row["params"][path]) if path in row["params"] else "" for path in paths)])
    return buffer.getvalue()


def importances(study: Any) -> dict[str, float] | None:
    """Optuna's parameter importances of ``study`` (its default evaluator); None with too few trials."""
    import optuna

    try:
        with warnings.catch_warnings():  # few trials per regime: the estimate says so, the report shows it as is
            warnings.simplefilter("ignore", UserWarning)
            return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError):
        return None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))
    _pyplot().close(figure)


def _plot_trials(rows: list[dict[str, Any]], metric: str, higher: bool, path: Path) -> None:
    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(6.4, 4.0))
    for role, color in zip(ROLES, ("tab:blue", "tab:orange")):
        done = [row for row in rows if row["role"] == role and row["state"] == "complete"]
        if not done:
            continue
        numbers = [row["number"] for row in done]
        values = [row["value"] for row in done]
        axes.scatter(numbers, values, color=color, s=18, label=f"{role} trials")
        best = [max(values[:i + 1]) if higher else min(values[:i + 1]) for i in range(len(values))]
        axes.step(numbers, best, where="post", color=color, label=f"{role} best so far")
    axes.set_xlabel("trial")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_ylabel(f"validation {metric}")
    axes.set_title("validation metric over trials (pruned trials not shown)")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)


def _plot_importance(found: dict[str, dict[str, float] | None], path: Path) -> None:
    pyplot = _pyplot()
    figure, panels = pyplot.subplots(1, len(ROLES), figsize=(9.6, 4.0))
    for axes, role in zip(panels, ROLES):
        values = found[role]
        axes.set_title(f"{role}: parameter importance")
        if not values:
            axes.text(0.5, 0.5, "too few finished trials\nto estimate importance", ha="center", va="center")
            axes.set_axis_off()
            continue
        names = list(values)[::-1]
        axes.barh(names, [values[name] for name in names], color="tab:green")
        axes.set_xlabel("importance (Optuna, PED-ANOVA)")
    _save(figure, path)


def _plot_temperature_weight(rows: list[dict[str, Any]], loss: str, metric: str, path: Path) -> bool:
    """Temperature × weight of ``loss`` over the distilled trials, coloured by validation metric
    (completed trials as dots, pruned ones as crosses at their last reported value); False
    (nothing written) when no such trial drew both."""
    x_key, y_key = f"losses.{loss}.temperature", f"weights.{loss}"
    points = [row for row in rows if row["role"] == "distilled" and row["state"] in ("complete", "pruned")
              and row["value"] is not None and x_key in row["params"] and y_key in row["params"]]
    if not points:
        return False
    from matplotlib.colors import Normalize
    from matplotlib.ticker import FormatStrFormatter

    pyplot = _pyplot()
    figure, axes = pyplot.subplots(figsize=(6.4, 4.4))
    scale = Normalize(min(row["value"] for row in points), max(row["value"] for row in points))
    for state, marker in (("complete", "o"), ("pruned", "x")):
        chosen = [row for row in points if row["state"] == state]
        shown = axes.scatter([row["params"][x_key] for row in chosen], [row["params"][y_key] for row in chosen],
                             c=[row["value"] for row in chosen], cmap="viridis", norm=scale, s=40, marker=marker,
                             label=f"{state} ({len(chosen)})")
    figure.colorbar(shown, ax=axes, label=f"validation {metric}")
    axes.set_xscale("log")
    for set_formatter in (axes.xaxis.set_major_formatter, axes.xaxis.set_minor_formatter):
        set_formatter(FormatStrFormatter("%g"))
    axes.set_xlabel(f"{x_key} (log scale)")
    axes.set_ylabel(y_key)
    axes.set_title(f"{loss}: temperature × weight (distilled trials)")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)
    return True


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def _markdown(summary: dict[str, Any], plots: list[str]) -> str:
    metric, best, test = summary["metric"], summary["best"], summary["test"]
    lines = [summary["verdict"]["text"], "", f"# kdistill sweep: {summary['recipe']}", "",
             f"Backend `{summary['backend']}`, task `{summary['task']}`: {summary['trials']['distilled']} trials of the "
             f"distilled student and {summary['trials']['scratch']} of its scratch twin (TPE sampler, median pruner "
             f"on the per-epoch validation {metric}). Trials read the validation split only; the best of each study "
             f"then trained with seeds {', '.join(map(str, test['seeds']))} and was scored once on the test split.",
             "", f"| model | validation {metric} (best trial) | test {metric} per seed | test mean ± std |",
             "|---|---|---|---|"]
    for role in ROLES:
        values = test[role]
        lines.append(f"| {role} (trial {best[role]['number']}) | {best[role]['value']:.4f} | "
                     f"{', '.join(f'{v:.4f}' for v in values)} | {statistics.mean(values):.4f} ± {_spread(values):.4f} |")
    lines += ["", "Best settings (`best.yaml` is the distilled recipe with them; `kdistill run best.yaml`):", ""]
    for role in ROLES:
        settings = ", ".join(f"`{path}` = {_value(value)}" for path, value in best[role]["params"].items())
        lines.append(f"- {role}: {settings or 'the recipe as given'}")
    seconds = [row["seconds"] for row in summary["trials_table"] if row["seconds"] is not None and row["state"] != "fail"]
    if seconds:
        lines += ["", f"Median trial time {statistics.median(seconds):.1f} s (the teacher is trained or cached once, "
                  "before the first trial)."]
    lines += ["", "## Trials", "", f"| study | trial | state | validation {metric} | epochs | seconds | values |",
              "|---|---|---|---|---|---|---|"]
    for row in summary["trials_table"]:
        value = "—" if row["value"] is None or math.isnan(row["value"]) else f"{row['value']:.4f}"
        seconds_cell = "—" if row["seconds"] is None else f"{row['seconds']:.1f}"
        values = ", ".join(f"{path}={_value(value)}" for path, value in row["params"].items())
        lines.append(f"| {row['role']} | {row['number']} | {row['state']} | {value} | {row['epochs']} | "
                     f"{seconds_cell} | {values} |")
    lines += ["", "Plots: " + ", ".join(f"`{name}`" for name in plots) + ". Every trial: `trials.csv`; "
              "all numbers: `sweep.json`; the studies: `sweep.db` (Optuna, SQLite).", ""]
    return "\n".join(lines)


def write_sweep_report(directory: Path, summary: dict[str, Any], studies: dict[str, Any], spaces: dict[str, Any],
                       loss: str) -> dict[str, Any]:
    """Write the plots, ``trials.csv``, ``sweep.md`` and, last, ``sweep.json`` (its presence marks a
    finished sweep); returns the summary with the trials table and importances."""
    rows = trial_rows(studies, spaces)
    metric = summary["metric"]
    found = {role: importances(studies[role]) for role in ROLES}
    summary = {**summary, "importance": found, "trials_table": rows}
    _plot_trials(rows, metric, HIGHER_IS_BETTER[metric], directory / "trials.png")
    _plot_importance(found, directory / "importance.png")
    plots = ["trials.png", "importance.png"]
    if _plot_temperature_weight(rows, loss, metric, directory / "temperature_weight.png"):
        plots.append("temperature_weight.png")
    paths = list(dict.fromkeys(path for row in rows for path in row["params"]))
    atomic_write(directory / "trials.csv", lambda tmp: tmp.write_text(_csv(rows, paths)))
    atomic_write(directory / "sweep.md", lambda tmp: tmp.write_text(_markdown(summary, plots)))
    atomic_write(directory / "sweep.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    return summary
