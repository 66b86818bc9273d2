"""Self-training rounds, Noisy Student style (Xie et al. 2020, "Self-training with Noisy Student
improves ImageNet classification"), for every backend, run by ``kdistill run`` on a recipe with
``self_training``.

Round 0 trains the recipe's teacher on the labeled samples alone. Round r (1..R) then:

1. runs its teacher once over every sample, writing a soft-target store of its outputs on the
   clean inputs (``OUT/stores/round-r``; :func:`kdistill.store.cache.cache_teacher`);
2. leaves out the transfer samples whose teacher confidence (top softmax probability) is below
   ``self_training.threshold``;
3. trains the recipe's student on the labeled samples (task loss) and on the pseudo labels of
   every sample (``kd`` on the teacher's probabilities, or ``hard`` on its argmax), under the
   recipe's noise: ``data.augment`` (the student's view, the teacher's clean outputs) and the
   student's own dropout. That is one ordinary ``kdistill run`` in ``OUT/round-r``, with its own
   report; round 1 also trains the scratch twin (labels only, the same initial weights), which
   no later round changes;
4. hands its student to round r + 1 as the teacher.

``OUT/self-training.md`` and ``.json`` give one row per round (teacher, student, scratch twin,
transfer samples kept) and ``rounds.png`` the curve. ``--resume`` keeps the finished rounds.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from scipy.special import softmax

from kdistill import backends
from kdistill.data import load_task_data
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError, writing
from kdistill.export.exporter import saved_file
from kdistill.recipe import Recipe
from kdistill.report.metrics import PRIMARY
from kdistill.report.write import atomic_write, line_plot
from kdistill.store import StoreReader
from kdistill.store.cache import cache_teacher
from kdistill.store.for_run import open_store_for
from kdistill.store.writer import remove_store

SUMMARY = "self-training"
MARKER = "INCOMPLETE"
ROUND = re.compile(r"round-\d+")
OWN = {"recipe.yaml", MARKER, f"{SUMMARY}.json", f"{SUMMARY}.md", "rounds.png", "stores"}
"""What a self-training run writes at the top of its directory, besides its ``round-N`` runs."""


def _round_dir(out: Path, index: int) -> Path:
    return out / f"round-{index}"


def check_directory(out: Path, recipe: Recipe, resume: bool, overwrite: bool) -> None:
    """``out`` can be written and is new, empty, or an earlier self-training run's (every round
    directory a kdistill run's): finished only with ``overwrite``, interrupted only with
    ``resume`` (of the same recipe) or ``overwrite``."""
    from kdistill.run import check_output_dir, check_same_recipe, check_writable

    if out.exists() and not out.is_dir():
        raise KdistillError(f"--out {str(out)!r} exists and is not a directory")
    check_writable(out)
    if not out.is_dir() or not any(out.iterdir()):
        if resume:
            raise KdistillError(f"--resume: {str(out)!r} holds no self-training run to resume")
        return
    foreign = [entry.name for entry in sorted(out.iterdir())
               if entry.name not in OWN and not (entry.is_dir() and not entry.is_symlink() and ROUND.fullmatch(entry.name))]
    if foreign:
        raise KdistillError(f"--out {str(out)!r} holds {foreign[0]!r}, which a self-training run does not write; "
                            "give a new or empty directory")
    for directory in _rounds(out):
        check_output_dir(directory, resume=False, overwrite=True)  # only files a run writes
    finished = (out / f"{SUMMARY}.json").exists() and not (out / MARKER).exists()
    if finished and not overwrite:
        raise KdistillError(f"--out {str(out)!r} already holds a finished self-training run; pass --overwrite "
                            "or pick another directory")
    if not finished and not (resume or overwrite):
        raise KdistillError(f"--out {str(out)!r} holds an interrupted self-training run: --resume it, or --overwrite")
    if resume:
        check_same_recipe(out, recipe, resume)


def _rounds(out: Path) -> list[Path]:
    return sorted(entry for entry in out.iterdir() if entry.is_dir() and not entry.is_symlink() and ROUND.fullmatch(entry.name))


def _forget(out: Path) -> None:
    """A fresh start: what marks an earlier run's rounds as done goes (each round's report, the
    round-0 teacher, the summary), so that no later ``--resume`` takes them for this run's."""
    stale = [out / name for name in (f"{SUMMARY}.json", f"{SUMMARY}.md", "rounds.png")]
    for directory in _rounds(out):
        stale += [directory / "report.json", *(directory.glob("teacher.*") if directory.name == "round-0" else ())]
    for path in stale:
        if path.is_file() and not path.is_symlink():
            path.unlink()


def _variant(recipe: Recipe, **changes: Any) -> Recipe:
    """The recipe with top-level sections replaced, as one ordinary run, validated again."""
    try:
        return Recipe.model_validate({**recipe.model_dump(mode="json"), "self_training": None, **changes})
    except ValidationError as error:
        raise KdistillError(f"self_training: a round's recipe is not valid: {error}") from None


def confident(store: StoreReader, data: TaskData, threshold: float) -> TaskData:
    """``data`` with only the transfer samples whose teacher confidence (top softmax probability
    of the stored logits) is at least ``threshold``."""
    if threshold == 0:
        return data
    confidence = softmax(np.asarray(store.fetch(data.transfer.ids), np.float64), axis=1).max(axis=1)
    kept = np.flatnonzero(confidence >= threshold)
    if len(kept) == 0:
        raise KdistillError(f"self_training.threshold: {threshold} leaves no transfer sample (the teacher's highest "
                            f"confidence is {confidence.max():.3f}); lower it")
    return dataclasses.replace(data, transfer=data.transfer.take(kept))


def _teacher(recipe: Recipe, data: TaskData, out: Path, resume: bool) -> Path:
    """Round 0: the recipe's teacher, trained on the labeled samples and saved in ``round-0``
    (kept as it is on ``--resume`` once saved)."""
    from kdistill.teacher import Teacher

    directory = _round_dir(out, 0)
    if recipe.teacher.path is not None:
        return Path(recipe.teacher.path)
    if resume and list(directory.glob("teacher.*")):
        return saved_file(directory / "teacher", "self_training: the round-0 teacher")
    backend = backends.load(recipe.backend)
    device = backend.device(recipe.train.device)
    teacher = Teacher(recipe, data, backend, device)
    (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
    with backend.job(device), backend.scope(device, recipe.train):
        path, _ = teacher.prepare(directory, directory / "checkpoints", resume)
    return path


def _student_round(recipe: Recipe, data: TaskData, teacher_file: Path, out: Path, index: int,
                   resume: bool) -> tuple[dict, int]:
    """Round ``index``: cache ``teacher_file``'s outputs, train the student from them; returns
    the round's report and how many transfer samples it kept."""
    from kdistill.pipeline import Pipeline
    from kdistill.run import PreparedRun

    config, directory = recipe.self_training, _round_dir(out, index)
    if resume and (directory / "report.json").exists() and not (directory / MARKER).exists():
        report = json.loads((directory / "report.json").read_text())
        return report, report["data"]["transfer"]
    store_dir = out / "stores" / f"round-{index}"
    if store_dir.is_symlink() or store_dir.exists() and not store_dir.is_dir():
        raise KdistillError(f"self_training: {store_dir} is not a store directory a round wrote; move it out")
    if store_dir.exists():
        remove_store(store_dir)
    # round 1's teacher is the recipe's; later ones are students, rebuilt as the student section says
    section = recipe.teacher if index == 1 else recipe.student
    teacher_recipe = _variant(recipe, teacher={"path": str(teacher_file), "model": section.model,
                                               "kwargs": section.kwargs, "trust_pickle": section.trust_pickle},
                              data={**recipe.data.model_dump(mode="json"), "augment": None})  # cached without views
    cache_teacher(teacher_recipe, data, store_dir, backends.load(recipe.backend), batch_size=recipe.train.eval_batch_size)
    augment = None if recipe.data.augment is None or not config.augment_students else \
        {**recipe.data.augment.model_dump(), "teacher_sees": "clean"}
    student_recipe = _variant(
        recipe, name=f"{recipe.name}-round-{index}", teacher={"store": str(store_dir)},
        data={**recipe.data.model_dump(mode="json"), "augment": augment},
        compare={**recipe.compare.model_dump(mode="json"), "scratch": index == 1 and recipe.compare.scratch})
    store = open_store_for(student_recipe, data)  # checked against all the data it was cached from
    kept = confident(store, data, config.threshold)
    prepared = PreparedRun(student_recipe, directory, False, kept, Pipeline(student_recipe, kept), store, None,
                           overwrite=True)
    _, report = prepared.execute()
    return report, len(kept.transfer)


def _metric(report: dict, role: str, metric: str) -> float | None:
    rows = [model for model in report["models"] if model["role"] == role]
    return rows[0]["metrics"][metric] if rows else None


def run_rounds(recipe: Recipe, out: str | Path | None, resume: bool = False,
               overwrite: bool = False) -> tuple[Path, dict]:
    """Run every round of ``recipe.self_training`` into ``out``; returns it and the summary."""
    config = recipe.self_training
    if out is None:
        raise KdistillError("self_training: give the output directory (--out DIR or output.dir)")
    out = Path(out)
    check_directory(out, recipe, resume, overwrite)
    if recipe.output.export:
        raise KdistillError("output.export: export a round's student with kdistill export OUT/round-N")
    data = load_task_data(recipe.data, recipe.task)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        _forget(out)
    with writing(out / MARKER, "this file"):
        (out / MARKER).write_text("kdistill self-training in progress (or interrupted); self-training.json is written last\n")
    atomic_write(out / "recipe.yaml", lambda tmp: tmp.write_text(recipe.to_yaml()))
    metric = PRIMARY[recipe.task]
    teacher_file = _teacher(recipe, data, out, resume)
    rows, scratch = [], None
    for index in range(1, config.rounds + 1):
        report, kept = _student_round(recipe, data, teacher_file, out, index, resume)
        if index == 1:
            scratch = _metric(report, "scratch", metric)
            rows.append({"round": 0, "teacher": None, "student": _metric(report, "teacher", metric),
                         "scratch": scratch, "transfer_kept": None})
        rows.append({"round": index, "teacher": _metric(report, "teacher", metric),
                     "student": _metric(report, "distilled", metric), "scratch": scratch, "transfer_kept": kept})
        teacher_file = saved_file(_round_dir(out, index) / "student", f"self_training: round {index}'s student")
    summary = {"recipe": recipe.name, "backend": recipe.backend, "metric": metric,
               "self_training": config.model_dump(), "transfer": len(data.transfer), "rounds": rows,
               "verdict": {"text": _verdict(rows, metric)}}
    _plot(summary, out / "rounds.png")
    atomic_write(out / f"{SUMMARY}.md", lambda tmp: tmp.write_text(_markdown(summary)))
    atomic_write(out / f"{SUMMARY}.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=2)))
    (out / MARKER).unlink()
    return out, summary


def _verdict(rows: list[dict], metric: str) -> str:
    first, last = rows[0], rows[-1]
    text = (f"Self-training: the round-{last['round']} student scores {last['student']:.4f} {metric} against "
            f"{first['student']:.4f} for the round-0 teacher ({last['student'] - first['student']:+.4f})")
    return text + (f" and {first['scratch']:.4f} for the scratch twin." if first["scratch"] is not None else ".")


def _markdown(summary: dict) -> str:
    metric, config = summary["metric"], summary["self_training"]
    lines = [f"# kdistill self-training: {summary['recipe']}", "",
             f"Backend `{summary['backend']}`, {len(summary['rounds']) - 1} rounds, {config['pseudo_labels']} pseudo "
             f"labels, confidence threshold {config['threshold']}, {summary['transfer']} transfer samples. "
             f"Test {metric}; round 0 is the teacher trained on the labels alone, each later round's student "
             "teaches the next. Each round's own report: `round-N/report.md`.", "",
             "| round | model trained in the round | its teacher | scratch twin | transfer samples kept |",
             "|---:|---:|---:|---:|---:|"]
    for row in summary["rounds"]:
        cells = [_cell(row["student"]), _cell(row["teacher"]), _cell(row["scratch"]),
                 "—" if row["transfer_kept"] is None else str(row["transfer_kept"])]
        lines.append(f"| {row['round']} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", summary["verdict"]["text"], "", "Curve: `rounds.png`.", ""])


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _plot(summary: dict, path: Path) -> None:
    rows = summary["rounds"]
    scratch = rows[0]["scratch"]
    line_plot(path, summary["recipe"], "round (0: the teacher trained on labels)", f"test {summary['metric']}",
              [("round's model", [row["round"] for row in rows], [row["student"] for row in rows])],
              None if scratch is None else ("scratch twin", scratch))
