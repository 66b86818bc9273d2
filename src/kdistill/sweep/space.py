"""The search space of a sweep: which recipe fields a trial draws, over which ranges.

Every parameter is a dotted recipe field (``train.lr``, ``losses.kd.temperature``,
``weights.kd``, ``student.kwargs.hidden``), except ``losses``: the set of catalogue losses a trial
turns on, written ``kd`` or ``kd+hard``; a loss's settings and weight are drawn only in trials
that turn it on. The default space of a recipe (:func:`default_space`) searches the distillation
settings (the losses that are on, each loss's temperature, the named weights) and the training
fields both studies share (lr, epochs, and weight decay when the recipe sets one). A YAML space
file (:func:`load_space`) adds any student-side recipe field by dotted path, replaces a default
range, or drops one (``train.epochs: null``); each field is checked by name against the recipe
schema and each bound and choice by validating a recipe that holds it.

The scratch twin's space (:meth:`Space.for_scratch`) is the same space less the distillation
parameters, so both studies tune the fields they share over the same ranges.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kdistill.errors import KdistillError
from kdistill.losses import CATALOGUE, LOSSES_BY_TASK
from kdistill.recipe import Recipe, recipe_from_dict

LOSS_SET = "losses"
"""The parameter that picks which distillation losses are on (a choice of ``+``-joined names)."""
TEMPERATURE = (1.0, 16.0)
"""The default range of every loss temperature (log scale): Hinton et al. found 2.5–4 best for
small students and up to 20 for large ones; T = 1 is the sharpest the catalogue's defaults use."""
WEIGHT = (0.0, 1.0)
"""The default range of every named weight, ``task`` included."""
LR_FACTOR = 5.0
"""lr is searched over [lr / 5, lr × 5] (log scale) of the recipe's, weight decay over [wd / 10, wd × 10]."""
FIXED = {
    "backend": "the framework is the recipe's",
    "task": "the task is the recipe's",
    "name": "the name is not a hyper-parameter",
    "data": "every trial reads the same splits and the teacher's outputs on them",
    "teacher": "the teacher is trained or cached once and shared by every trial",
    "compare": "the sweep runs its own comparison",
    "output": "the sweep writes into its own directory",
    "features": "feature losses need the teacher model in every step; a sweep teaches from its cached outputs",
    "train.seed": "the seed is not tuned: the verdict runs 3 seeds of the best settings",
    "train.device": "the device is not a hyper-parameter",
    "train.progress": "not a hyper-parameter",
    "train.log": "not a hyper-parameter",
    "train.eval_batch_size": "it changes no result",
    "train.data_parallel": "not a hyper-parameter",
}
"""Recipe fields a space may not search, and why."""
SPEC_KEYS = {"low", "high", "log", "choices"}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


@dataclass(frozen=True)
class Param:
    """One searched field: a numeric range ``[low, high]`` (``integer`` for int fields, ``log``
    for a log scale) or ``choices``. Choices that are not plain values (lists, mappings) are
    drawn by their JSON text and decoded when applied."""

    path: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] | None = None

    @property
    def loss(self) -> str | None:
        """The loss this parameter belongs to (``losses.NAME.*``, ``weights.NAME``), if any."""
        parts = self.path.split(".")
        if parts[0] == "losses" and len(parts) > 1:
            return parts[1]
        if parts[0] == "weights" and len(parts) == 2 and parts[1] != "task":
            return parts[1]
        return None

    @property
    def distillation(self) -> bool:
        """Does only a distilled student have this field (a loss, a weight, the loss set)?"""
        return self.path == LOSS_SET or self.path.split(".")[0] in ("losses", "weights")

    def labels(self) -> list[Any]:
        return [choice if _plain(choice) else json.dumps(choice) for choice in self.choices]

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter in an Optuna trial; returns the recipe value."""
        if self.choices is not None:
            label = trial.suggest_categorical(self.path, self.labels())
            return self.choices[self.labels().index(label)]
        if self.integer:
            return trial.suggest_int(self.path, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.path, self.low, self.high, log=self.log)

    def decode(self, value: Any) -> Any:
        """The recipe value of an Optuna parameter value (a choice's JSON label decoded)."""
        if self.choices is None:
            return value
        return self.choices[self.labels().index(value)]

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(json.dumps(choice) if not isinstance(choice, str) else choice
                                         for choice in self.choices)
        scale = ", log scale" if self.log else ""
        kind = "integers " if self.integer else ""
        return f"{kind}{self.low:g} to {self.high:g}{scale}"

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log, **({"int": True} if self.integer else {})}


@dataclass(frozen=True)
class Space:
    """The parameters of one study, the loss set first."""

    params: tuple[Param, ...] = field(default_factory=tuple)

    @property
    def paths(self) -> list[str]:
        return [param.path for param in self.params]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Draw a trial's recipe values: a loss's parameters only when the loss is on."""
        values: dict[str, Any] = {}
        on = None
        for param in self.params:
            if param.loss is not None and on is not None and param.loss not in on:
                continue
            values[param.path] = param.suggest(trial)
            if param.path == LOSS_SET:
                on = values[param.path].split("+")
        return values

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The recipe values of a finished trial's Optuna parameters."""
        by_path = {param.path: param for param in self.params}
        return {path: by_path[path].decode(value) for path, value in params.items()}

    def for_scratch(self) -> "Space":
        """The scratch twin's space: every parameter a student without a teacher has."""
        return Space(tuple(param for param in self.params if not param.distillation))

    def to_dict(self) -> dict[str, Any]:
        return {param.path: param.to_dict() for param in self.params}


def apply(recipe: Recipe, values: Mapping[str, Any]) -> Recipe:
    """``recipe`` with a trial's values: the loss set first (losses it keeps keep their settings,
    new ones start from the catalogue's), then every dotted field."""
    raw = recipe.model_dump(mode="json")
    if LOSS_SET in values:
        on = values[LOSS_SET].split("+")
        raw["losses"] = {name: raw["losses"].get(name, {}) for name in on}
        raw["weights"] = {"task": raw["weights"].get("task", 0.0),
                          **{name: raw["weights"].get(name, 0.5) for name in on}}
    return recipe_from_dict(raw, [f"{path}={json.dumps(value)}" for path, value in values.items() if path != LOSS_SET])


def scratch_recipe(recipe: Recipe) -> Recipe:
    """The scratch twin of ``recipe``: the same student and training, the task loss alone."""
    raw = recipe.model_dump(mode="json")
    raw["losses"], raw["weights"] = {}, {"task": 1.0}
    return recipe_from_dict(raw)


def check_sweepable(recipe: Recipe) -> None:
    """A sweep tunes distillation: the recipe needs a distillation loss and a teacher the sweep
    can cache once (one of the student's framework, no feature losses)."""
    if not recipe.losses:
        raise KdistillError(f"losses: recipe {recipe.name!r} has no distillation loss (weights: "
                            f"{dict(recipe.weights)}); a sweep tunes distillation against its scratch twin: "
                            "add one, e.g. losses: {kd: {}} with weights: {task: 0.5, kd: 0.5}")
    if recipe.features:
        raise KdistillError(f"features: {FIXED['features']}; sweep a recipe without features")
    if recipe.foreign_teacher:
        raise KdistillError(f"teacher.backend: a sweep caches the teacher in the student's framework "
                            f"({recipe.backend!r}); cache the {recipe.teacher.backend!r} teacher first "
                            "(kdistill cache) and give teacher.store")


def candidate_losses(recipe: Recipe) -> list[str]:
    """The catalogue losses a trial may turn on: those of the recipe's task that read the
    teacher's outputs (not its features)."""
    return [name for name in LOSSES_BY_TASK[recipe.task] if CATALOGUE[name].inputs != "features"]


def default_space(recipe: Recipe) -> Space:
    """The default search space of ``recipe`` (see the module's description)."""
    own = "+".join(recipe.losses)
    others = [name for name in candidate_losses(recipe) if name not in recipe.losses]
    params = [Param(LOSS_SET, choices=tuple([own, *others]))] if others else []
    for name in [*recipe.losses, *others]:
        if "temperature" in CATALOGUE[name].params:
            params.append(Param(f"losses.{name}.temperature", *TEMPERATURE, log=True))
        params.append(Param(f"weights.{name}", *WEIGHT))
    params.append(Param("weights.task", *WEIGHT))
    train = recipe.train
    params.append(Param("train.lr", train.lr / LR_FACTOR, train.lr * LR_FACTOR, log=True))
    params.append(Param("train.epochs", max(1, train.epochs // 2), train.epochs * 2, integer=True))
    if train.weight_decay > 0:
        params.append(Param("train.weight_decay", train.weight_decay / 10, train.weight_decay * 10, log=True))
    return Space(tuple(params))


def _optional_inner(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def field_type(path: str, where: str) -> Any:
    """The schema type of the recipe field ``path`` (``Any`` inside free mappings such as
    ``student.kwargs``); a field that does not exist or may not be searched is a named error."""
    parts = path.split(".")
    for depth in range(len(parts), 0, -1):
        prefix = ".".join(parts[:depth])
        if prefix in FIXED:
            raise KdistillError(f"{where}: {path}: a sweep does not search {prefix} ({FIXED[prefix]})")
    node: Any = Recipe
    for depth, part in enumerate(parts):
        section = ".".join(parts[:depth]) or "the recipe"
        node = _optional_inner(node)
        if node is Any:
            return Any
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                raise KdistillError(f"{where}: {path}: {section} has no field {part!r} "
                                    f"(its fields: {', '.join(node.model_fields)})")
            node = node.model_fields[part].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            raise KdistillError(f"{where}: {path}: {section} is a value, not a section with field {part!r}")
    return _optional_inner(node)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KdistillError(f"{where}: {value!r} is not a number")
    return value


def parse_param(path: str, spec: Any, where: str) -> Param:
    """One space-file entry (``{low, high[, log]}`` or ``{choices: [...]}``), checked by name."""
    kind = field_type(path, where) if path != LOSS_SET else str
    if not isinstance(spec, dict):
        raise KdistillError(f"{where}: {path}: expected {{low: A, high: B}} or {{choices: [...]}}, got {spec!r}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise KdistillError(f"{where}: {path}: unknown key(s) {', '.join(unknown)}; allowed: low, high, log, choices")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise KdistillError(f"{where}: {path}: give either choices or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise KdistillError(f"{where}: {path}.choices: {choices!r} is not a non-empty list")
        return Param(path, choices=tuple(choices))
    missing = [key for key in ("low", "high") if key not in spec]
    if missing:
        raise KdistillError(f"{where}: {path}: a range needs {' and '.join(missing)}")
    low, high = (_number(spec[key], f"{where}: {path}.{key}") for key in ("low", "high"))
    if not low < high:
        raise KdistillError(f"{where}: {path}: empty range: low {low!r} is not below high {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise KdistillError(f"{where}: {path}.log: {log!r} is not true or false")
    if log and low <= 0:
        raise KdistillError(f"{where}: {path}: a log-scale range needs low > 0, got {low!r}")
    integer = kind is int or (kind is Any and isinstance(low, int) and isinstance(high, int))
    if kind not in (int, float, Any):
        raise KdistillError(f"{where}: {path}: a range needs a numeric field ({path} is "
                            f"{getattr(kind, '__name__', kind)}); give choices: [...] instead")
    if integer and not (float(low).is_integer() and float(high).is_integer()):
        raise KdistillError(f"{where}: {path}: an integer field needs integer bounds, got {low!r} and {high!r}")
    return Param(path, low, high, log=log, integer=integer)


def losses_on(recipe: Recipe, space: Space) -> list[str]:
    """Every loss some trial of ``space`` turns on: the recipe's, or those of the loss set's choices."""
    loss_set = {param.path: param for param in space.params}.get(LOSS_SET)
    if loss_set is None:
        return list(recipe.losses)
    return list(dict.fromkeys(name for choice in loss_set.choices for name in str(choice).split("+")))


def _check_values(recipe: Recipe, space: Space, where: str) -> None:
    """Every bound and choice of ``space`` makes a valid recipe (each alone, every loss on)."""
    loss_set = {param.path: param for param in space.params}.get(LOSS_SET)
    names = losses_on(recipe, space)
    for choice in () if loss_set is None else loss_set.choices:
        if not isinstance(choice, str) or not choice:
            raise KdistillError(f"{where}: {LOSS_SET}: choice {choice!r} is not loss names joined by '+'")
    for name in names:
        if name not in candidate_losses(recipe):
            raise KdistillError(f"{where}: {LOSS_SET}: {name!r} is not a loss a sweep of this {recipe.task} recipe "
                                f"can turn on; allowed: {', '.join(candidate_losses(recipe))}")
    for param in space.params:
        if param.loss is not None and param.loss not in names:
            raise KdistillError(f"{where}: {param.path}: no trial turns loss {param.loss!r} on "
                                f"(the losses of this sweep: {', '.join(names)})")
    every_loss = apply(recipe, {LOSS_SET: "+".join(names)}) if loss_set is not None else recipe
    for param in space.params:
        if param.path == LOSS_SET:
            continue
        values = param.choices if param.choices is not None else (param.low, param.high)
        for value in values:
            try:
                apply(every_loss, {param.path: value})
            except KdistillError as error:
                raise KdistillError(f"{where}: {param.path}: {value!r} does not make a valid recipe: {error}") from None


def load_space(recipe: Recipe, source: str | Path | None) -> Space:
    """The space of a sweep of ``recipe``: the default one, with a space file's entries added,
    replacing defaults of the same field, or dropping them (``FIELD: null``). Checked in full."""
    check_sweepable(recipe)
    space = default_space(recipe)
    where = "the default search space"
    if source is not None:
        where = f"--space {source}"
        path = Path(source)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise KdistillError(f"{where}: not a readable YAML file: {error}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise KdistillError(f"{where}: expected a mapping of dotted recipe fields to ranges, got {type(raw).__name__}")
        params = {param.path: param for param in space.params}
        for key, spec in raw.items():
            key = str(key)
            if spec is None:
                if key not in params:
                    raise KdistillError(f"{where}: {key}: null drops a default parameter, and the default space has "
                                        f"no {key} (it has: {', '.join(params)})")
                del params[key]
                continue
            params[key] = parse_param(key, spec, where)
        ordered = sorted(params.values(), key=lambda param: param.path != LOSS_SET)  # the loss set first
        on = losses_on(recipe, Space(tuple(ordered)))  # defaults of losses no trial turns on go
        space = Space(tuple(param for param in ordered if param.path in raw or param.loss in (None, *on)))
    _check_values(recipe, space, where)
    if not space.params:
        raise KdistillError(f"{where}: no parameter is left to search")
    return space

