"""The objective of a fit, planned from the loss catalogue: total = Σ weights[name] · loss[name].

``task`` is the supervised loss on true labels; every other term is a catalogue loss, and what it
reads comes from its :class:`kdistill.losses.LossInfo`, never from its name: ``inputs`` (the
teacher's logits, its probabilities at the loss's temperature, or intermediate features) and
``needs_labels`` (the loss reads the true class, so only the labeled rows). A batch holds the
labeled rows first, then any transfer rows: the task loss and label-reading terms see the first
``len(y)`` rows, every other term all of them. Each backend's distiller computes the terms in its
framework through :meth:`Objective.logit_arguments`, so the dispatch is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdistill.errors import KdistillError
from kdistill.losses import CATALOGUE, LossInfo

if TYPE_CHECKING:
    from kdistill.recipe import Recipe


@dataclass(frozen=True)
class Term:
    """One distillation loss of the objective: its weight, settings and catalogue entry."""

    name: str
    weight: float
    settings: dict[str, float] = field(default_factory=dict)

    @property
    def info(self) -> LossInfo:
        return CATALOGUE[self.name]

    @property
    def reads_features(self) -> bool:
        return self.info.inputs == "features"

    @property
    def labeled_only(self) -> bool:
        return self.info.needs_labels


class Objective:
    """Named weights and loss settings, checked: every loss in the catalogue and given a teacher
    (a model, or its outputs per batch), every weight naming ``task`` or a loss, none negative.
    Terms of weight 0 are dropped."""

    def __init__(self, task: str, weights: Mapping[str, float],
                 losses: Mapping[str, Mapping[str, float]] | None = None, has_teacher: bool = True, heads: int = 1):
        """``heads``: 2 for a student with a distillation token (see :meth:`split`)."""
        losses = dict(losses or {})
        if heads not in (1, 2):
            raise KdistillError(f"a student has one head or two (class and distillation), not {heads}")
        if losses and not has_teacher:
            raise KdistillError(f"losses {', '.join(losses)} need a teacher; none was given "
                                "(offline: its outputs come per batch)")
        for name in losses:
            if name not in CATALOGUE:
                raise KdistillError(f"losses.{name}: unknown loss; allowed: {', '.join(CATALOGUE)}")
        for name, weight in weights.items():
            if name != "task" and name not in losses:
                raise KdistillError(f"weights.{name}: no loss of that name in losses ({', '.join(losses) or 'none'})")
            if not weight >= 0:
                raise KdistillError(f"weights.{name}: {weight} is negative (weights must be >= 0)")
        if heads == 2 and not weights.get("task", 0) > 0:
            raise KdistillError("weights.task: a student with a distillation token needs the task loss (> 0), the only "
                                "loss its class head learns from")
        self.task, self.heads = task, heads
        self.weights = {name: float(weight) for name, weight in weights.items() if weight > 0}
        self.terms = [Term(name, self.weights[name], dict(settings)) for name, settings in losses.items()
                      if name in self.weights]

    @classmethod
    def of_recipe(cls, recipe: "Recipe") -> "Objective":
        """The distilled student's objective of a recipe: its weights, its losses' settings, and
        the student's heads."""
        return cls(recipe.task, recipe.weights, {name: recipe.loss_settings(name) for name in recipe.losses},
                   heads=recipe.student.heads)

    @classmethod
    def task_only(cls, task: str, heads: int = 1) -> "Objective":
        """The supervised loss alone: a teacher's own training, the scratch twin."""
        return cls(task, {"task": 1.0}, heads=heads)

    def split(self, student_out: Any) -> tuple[list[Any], Any]:
        """(the outputs the task loss reads, the output the distillation terms read) of a training
        forward. A student with a distillation token (DeiT, Touvron et al. 2021) gives
        ``[class head | distillation head]`` while it trains (and their mean in inference): the
        task loss reads the class head and every logit term the distillation head; with no logit
        term (the scratch twin, or feature losses alone), the task loss reads both heads, averaged,
        so that both learn. A one-head student's output is read by both."""
        if self.heads == 1:
            return [student_out], student_out
        classes = student_out.shape[-1] // 2
        class_out, distill_out = student_out[..., :classes], student_out[..., classes:]
        taught = any(not term.reads_features for term in self.terms)  # a term reads the distillation head
        return ([class_out] if taught else [class_out, distill_out]), distill_out

    @staticmethod
    def task_part(task_loss: Callable[[Any], Any], task_outputs: list[Any]) -> Any:
        """The task loss averaged over the heads it reads (:meth:`split`): ``task_loss(head)``."""
        values = [task_loss(output) for output in task_outputs]
        return values[0] if len(values) == 1 else sum(values) / len(values)

    @property
    def parts(self) -> list[str]:
        """The names of the loss parts, in the order a step reports them."""
        return [*(["task"] if "task" in self.weights else []), *(term.name for term in self.terms)]

    @property
    def losses(self) -> dict[str, dict[str, float]]:
        """The terms' settings by loss name (what a distiller is made with)."""
        return {term.name: dict(term.settings) for term in self.terms}

    @property
    def distills(self) -> bool:
        """Whether any term reads the teacher (and so whether transfer rows join the batches)."""
        return bool(self.terms)

    def labeled_only(self, name: str) -> bool:
        """Whether part ``name`` averages over the labeled rows only (else over every row)."""
        return name == "task" or CATALOGUE[name].needs_labels

    def total(self, parts: Mapping[str, Any], share: Mapping[str, float] | None = None) -> Any:
        """Σ weights[name] · parts[name]; under data parallelism ``share`` scales each part by this
        process's share of the rows it averages (``labeled`` or ``all``)."""
        if share is None:
            return sum(self.weights[name] * value for name, value in parts.items())
        return sum(self.weights[name] * value * share["labeled" if self.labeled_only(name) else "all"]
                   for name, value in parts.items())

    @staticmethod
    def logit_arguments(term: Term, student_out: Any, teacher_out: Any, y: Any, labeled: int,
                        softmax: Callable[[Any], Any]) -> tuple[Any, ...]:
        """The arguments of a logit term's loss function: ``(student, teacher)``, with the
        teacher's probabilities at the term's temperature for a loss that reads probabilities, and
        ``(labeled student, labeled teacher, y)`` for one that reads the true class."""
        if term.info.needs_labels:
            return student_out[:labeled], teacher_out[:labeled], y
        if term.info.inputs == "probs":
            return student_out, softmax(teacher_out / term.settings["temperature"])
        return student_out, teacher_out
