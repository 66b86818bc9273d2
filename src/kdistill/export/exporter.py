"""``kdistill export RUN_DIR``: the trained models of a finished run, loaded from the files the run
saved, written in the formats asked for into ``RUN_DIR/export/``, each run in its runtime on the
test split and compared with the framework's outputs before it is given its final name, then
timed beside the framework for the report's deploy section.

An export is finished when its sidecar ``NAME.json`` (class names, preprocessing, input and
output, the verification) exists: a file is written to a ``.partial-`` name, verified, renamed,
and its sidecar written last; a failed export removes its partial file and leaves any earlier
finished export of that name as it was.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kdistill import backends
from kdistill.backends.contract import Backend
from kdistill.data import load_task_data
from kdistill.data.splits import TaskData
from kdistill.errors import KdistillError, reading
from kdistill.export import deploy
from kdistill.export.formats import FORMATS, TOLERANCE, Format, check_format, check_quantize, file_name
from kdistill.export.quantize import quantize_onnx
from kdistill.export.verify import Verification, check, compare, run_in_batches
from kdistill.lock import exclusive
from kdistill.recipe import ModelConfig, Recipe
from kdistill.report.write import add_deploy, atomic_write
from kdistill.teacher import probe_rows

EXPORT_DIR = "export"
PARTIAL = ".partial-"
EXPORT_FILE = re.compile(r"(\.partial-)?(student|teacher|scratch)(\.(float16|int8))?\.(onnx|tflite|savedmodel|hf)(\.json)?")
"""The names kdistill writes in ``RUN_DIR/export`` (partial ones included): all a fresh run deletes there."""
RUNTIMES = {"onnx": "kdistill.export.onnx", "tflite": "kdistill.export.litert", "savedmodel": "kdistill.export.savedmodel",
            "hf": "kdistill.export.hf"}


@dataclass(frozen=True)
class Role:
    """A model of a run: its name on the command line, in the report, and where the run saved it."""

    name: str
    report: str
    stem: str


ROLES = {role.name: role for role in (Role("student", "distilled", "student"), Role("teacher", "teacher", "teacher"),
                                      Role("scratch", "scratch", "checkpoints/scratch"))}


def finished_recipe(directory: Path) -> Recipe:
    """The recipe of the finished run in ``directory``; anything else is a named error."""
    from kdistill.run import MARKER

    if not directory.is_dir():
        raise KdistillError(f"RUN_DIR {str(directory)!r} is not a directory (give the --out of a finished kdistill run)")
    if (directory / MARKER).exists() or not (directory / "report.json").is_file():
        raise KdistillError(f"RUN_DIR {str(directory)!r} is not a finished kdistill run (no report.json, or its "
                            f"{MARKER} file says it is under way or failed): finish or resume the run first")
    stored = directory / "recipe.yaml"
    with reading(stored, "the recipe of a kdistill run", field="RUN_DIR"):
        raw = yaml.safe_load(stored.read_text())
    if not isinstance(raw, dict):
        raise KdistillError(f"RUN_DIR: {stored} is not the recipe of a kdistill run")
    try:
        return Recipe.model_validate(raw)
    except Exception as error:
        raise KdistillError(f"RUN_DIR: {stored} is not a valid recipe: {error}") from None


def _roles(recipe: Recipe, asked: list[str] | None) -> list[Role]:
    """The roles to export: those asked (each must exist in the run), or every model the run saved."""
    present = [name for name in ROLES if not (name == "teacher" and recipe.teacher.store is not None)
               and not (name == "scratch" and not recipe.compare.scratch)]
    for name in asked or ():
        if name not in ROLES:
            raise KdistillError(f"--role: {name!r} is not a role; allowed: {', '.join(ROLES)}")
        if name not in present:
            raise KdistillError(f"--role {name}: this run has no {name} model (a store teacher has only its outputs; "
                                "compare.scratch: false trains no scratch twin)")
    return [ROLES[name] for name in (asked or present)]


def _backend_of(recipe: Recipe, role: Role) -> str:
    return recipe.teacher.backend or recipe.backend if role.name == "teacher" else recipe.backend


def _model_file(directory: Path, recipe: Recipe, role: Role) -> Path:
    """The model file the run saved for ``role`` (``teacher.path`` for a loaded teacher)."""
    if role.name == "teacher" and recipe.teacher.path is not None:
        return Path(recipe.teacher.path)
    return saved_file(directory / role.stem, f"RUN_DIR: the {role.name} model")


def saved_file(stem: Path, what: str) -> Path:
    """The one model file a backend saved at ``stem`` (``stem.safetensors``, ``stem.keras``, an
    Orbax ``stem.orbax`` folder...); ``what`` names it in the error when there is none or several."""
    found = sorted(path for path in stem.parent.glob(f"{stem.name}.*")
                   if path.name == stem.name + path.suffix and path.suffix not in (".json", ".tmp"))
    if len(found) != 1:
        raise KdistillError(f"{what} {stem}.* is {'missing' if not found else 'ambiguous'} "
                            f"({', '.join(path.name for path in found) or 'no file'})")
    return found[0]


def _load(backend: Backend, directory: Path, recipe: Recipe, role: Role, data: TaskData, device: Any) -> tuple[Any, Path]:
    """The trained model of ``role``, rebuilt from its saved file, frozen."""
    section = recipe.teacher if role.name == "teacher" else recipe.student
    file = _model_file(directory, recipe, role)
    config = ModelConfig(model=section.model, kwargs=section.kwargs, path=str(file), trust_pickle=section.trust_pickle)
    model, _ = backend.build(config, data, role.name, recipe.train.seed, device)
    backend.set_trainable(model, False)
    return model, file


def _runtime(fmt: Format):
    return importlib.import_module(RUNTIMES[fmt.name])


def _properties(recipe: Recipe, data: TaskData, role: Role, backend: str) -> dict:
    """What an exported file carries: the task, class names and the preprocessing it expects."""
    return {"kdistill.role": role.report, "kdistill.backend": backend, "kdistill.recipe": recipe.name,
            "kdistill.task": recipe.task, "kdistill.data": data.name, "kdistill.classes": data.meta.get("classes"),
            "kdistill.preprocessing": {"input_shape": [None, *data.input_shape], "dtype": str(data.test.x.dtype),
                                       "description": data.meta.get("preprocessing"), "decode": data.meta.get("decode")}}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass
class Export:
    """A verified file of one model in one format and precision."""

    role: Role
    fmt: Format
    precision: str
    path: Path
    verification: Verification


class ModelExporter:
    """One trained model: its framework outputs on the test split, and its exports."""

    def __init__(self, backend: Backend, backend_name: str, model: Any, source: Path, role: Role, recipe: Recipe,
                 data: TaskData, out: Path, device: Any, tolerances: dict[str, float | None]):
        self.backend, self.backend_name, self.model, self.source, self.role = backend, backend_name, model, source, role
        self.recipe, self.data, self.out, self.device, self.tolerances = recipe, data, out, device, tolerances
        self.batch_size = recipe.train.eval_batch_size
        self.framework = backend.predict(model, data.test.x, self.batch_size, device)

    def export(self, fmt: Format, precision: str) -> Export:
        """Write, verify and name one file (ONNX quantizations start from the verified float32 file)."""
        final = self.out / file_name(self.role.name, fmt, precision)
        partial = final.with_name(PARTIAL + final.name)
        _remove(partial)
        properties = _properties(self.recipe, self.data, self.role, self.backend_name)
        try:
            if fmt.name == "onnx" and precision != "float32":
                quantize_onnx(self.out / file_name(self.role.name, fmt, "float32"), partial, precision)
            else:
                self.backend.export(self.model, fmt.name, partial, probe_rows(self.data),
                                    None if precision == "float32" else precision)
            if hasattr(_runtime(fmt), "add_metadata"):  # formats that carry class names and preprocessing inside
                _runtime(fmt).add_metadata(partial, properties)
            outputs = run_in_batches(_runtime(fmt).runner(partial), self.data.test.x, self.batch_size)
            verification = compare(self.recipe.task, outputs, self.framework, self.data.test.y, self.tolerances[precision])
            check(verification, final, f"the {precision} {fmt.name} export of the {self.role.name} ({self.source.name})")
            signature = _runtime(fmt).signature(partial)
            sidecar = final.with_name(final.name + ".json")
            sidecar.unlink(missing_ok=True)
            _remove(final)
            partial.rename(final)
        finally:
            _remove(partial)
        described = {"format": fmt.name, "precision": precision, "runtime": fmt.runtime, "source": str(self.source),
                     **signature, **{key.removeprefix("kdistill."): value for key, value in properties.items()},
                     "verification": verification.to_dict()}
        atomic_write(sidecar, lambda tmp: tmp.write_text(json.dumps(described, indent=2)))
        return Export(self.role, fmt, precision, final, verification)


def _tolerances(given: dict[str, float] | None) -> dict[str, float | None]:
    tolerances = dict(TOLERANCE)
    for precision, value in (given or {}).items():
        if precision not in tolerances:
            raise KdistillError(f"--tolerance: {precision!r} is not a precision; allowed: {', '.join(tolerances)}")
        if value is not None and not value >= 0:
            raise KdistillError(f"--tolerance {precision}: {value} must be >= 0")
        tolerances[precision] = value
    return tolerances


def export_run(directory: Path, formats: list[str], quantize: list[str] | None = None, roles: list[str] | None = None,
               tolerances: dict[str, float] | None = None) -> dict:
    """``kdistill export``: the finished run in ``directory`` exported (under its lock); returns its report."""
    recipe = finished_recipe(directory)
    with exclusive(directory, "RUN_DIR", "kdistill export"):
        finished_recipe(directory)  # another writer may have changed it since
        return export_finished(directory, recipe, formats, quantize, roles, tolerances)


def check_request(recipe: Recipe, formats: list[str], quantize: list[str] | None, roles: list[str] | None) -> None:
    """Every format, quantization and role asked for can be exported from this run's backends."""
    if not formats:
        raise KdistillError(f"--format: give at least one of {', '.join(FORMATS)}")
    for role in _roles(recipe, roles):
        chosen = [check_format(_backend_of(recipe, role), name) for name in formats]
        for precision in quantize or ():  # a quantization applies to the formats that take it
            if not any(precision in fmt.precisions for fmt in chosen):
                check_quantize(chosen[0], precision)


def export_finished(directory: Path, recipe: Recipe, formats: list[str], quantize: list[str] | None = None,
                    roles: list[str] | None = None, tolerances: dict[str, float] | None = None) -> dict:
    """Export the models of the finished run ``recipe`` wrote into ``directory`` (the caller holds
    its lock): every role in every format (and quantization), verified; then the deploy section
    of its report. Returns the report."""
    check_request(recipe, formats, quantize, roles)
    tolerances = _tolerances(tolerances)
    data = load_task_data(recipe.data, recipe.task)
    out = directory / EXPORT_DIR
    out.mkdir(exist_ok=True)
    exports, frameworks = [], {}
    for role in _roles(recipe, roles):
        name = _backend_of(recipe, role)
        backend = backends.load(name)
        device = backend.device("cpu")  # the runtimes run on the CPU: so does the framework they are held against
        with backend.scope(device, recipe.train):
            model, source = _load(backend, directory, recipe, role, data, device)
            exporter = ModelExporter(backend, name, model, source, role, recipe, data, out, device, tolerances)
            for fmt_name in formats:
                fmt = check_format(name, fmt_name)
                exports += [exporter.export(fmt, precision) for precision in ("float32", *(quantize or ()))
                            if precision in fmt.precisions]
            frameworks[role.report] = backend.timed_forward(model, data.test.x, device)
    section = deploy_section(exports, frameworks, data, recipe.compare.latency_repeats)
    return add_deploy(directory, recipe, section)


def deploy_section(exports: list[Export], frameworks: dict, data: TaskData, repeats: int) -> dict:
    """The report's deploy section: every export's size, test metrics, difference from the
    framework and latency in its runtime beside the framework's, measured side by side."""
    threads = {"threads_1": 1, "threads_all": deploy.all_cores()}
    runtimes = {export.path.name: {key: _runtime(export.fmt).runner(export.path, count) for key, count in threads.items()}
                for export in exports if export.fmt.name != "savedmodel"}
    per_file, per_role = deploy.measure(runtimes, frameworks, data.test.x, repeats)
    rows = [{"role": export.role.report, "format": export.fmt.name, "precision": export.precision,
             "runtime": export.fmt.runtime, "file": f"{EXPORT_DIR}/{export.path.name}",
             "size_bytes": _size(export.path), "verification": export.verification.to_dict(),
             "latency_ms": per_file.get(export.path.name), "framework_latency_ms": per_role[export.role.report]}
            for export in exports]
    return {"threads_all": threads["threads_all"], "repeats": repeats, "rows": rows}


def _size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.is_dir() else path.stat().st_size


def remove_exports(directory: Path) -> None:
    """A fresh run in ``directory``: delete what an earlier run exported there, by name."""
    out = directory / EXPORT_DIR
    if out.is_dir() and not out.is_symlink():
        for entry in sorted(out.iterdir()):
            if EXPORT_FILE.fullmatch(entry.name) and not entry.is_symlink():
                _remove(entry)


def parse_tolerances(given: list[str]) -> dict[str, float]:
    """``--tolerance PRECISION=VALUE`` arguments as a mapping (``none``: not checked)."""
    parsed = {}
    for item in given:
        precision, _, value = item.partition("=")
        try:
            parsed[precision] = None if value.lower() == "none" else float(value)
        except ValueError:
            raise KdistillError(f"--tolerance: {item!r} is not PRECISION=NUMBER, e.g. float16=0.01") from None
    return parsed

