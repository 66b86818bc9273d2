"""The distillation objective: a student, an optional frozen teacher, losses by name and named
weights. Total = Σ weights[name] · loss[name]; ``task`` is the supervised loss on true labels.

The same module computes the teacher's own training (weights ``{task: 1}``, no teacher) and the
scratch twin's, so every model in a run is trained by one code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kdistill.errors import KdistillError
from kdistill.objective import Objective
from kdistill.recipe import FeaturePair
from kdistill.data.text_encoding import MASK
from kdistill.torch.features import FeatureTap, make_adapter, make_projection
from kdistill.torch.losses import LOSS_FUNCTIONS, SoftTargets, task_and_kd, task_loss


ADAPTED = {"hint": make_adapter, "hidden_mse": make_projection}
"""Feature losses whose student features pass through a learned map owned by the distiller."""


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients: a teacher never trains and never changes under distillation."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class Distiller(nn.Module):
    """student + frozen teacher → (total loss, {name: loss}) for one batch.

    ``x`` holds the labeled samples first and then any unlabeled transfer samples; ``y`` labels
    the first ``len(y)`` rows. Offline (``offline=True``, no teacher model), the caller passes the
    teacher's outputs for the batch, e.g. read from a soft-target store. The task loss (and ``dkd``, which needs the true class) reads the
    labeled rows; every other distillation loss reads all rows. The teacher sees exactly the batch
    the student sees. Hint adapters are owned here and trained with the student.
    """

    def __init__(self, student: nn.Module, task: str, weights: Mapping[str, float],
                 losses: Mapping[str, Mapping[str, float]] | None = None, teacher: nn.Module | None = None,
                 features: Sequence[FeaturePair] = (), probe: torch.Tensor | None = None, offline: bool = False,
                 heads: int = 1):
        super().__init__()
        self.objective = Objective(task, weights, losses, teacher is not None or offline, heads)
        self.student, self.task = student, task
        self._teacher = [freeze(teacher)] if teacher is not None else []  # a list keeps it out of parameters()
        self.features = [pair for pair in features if pair.loss in self.objective.weights]
        attention = {"student": [p.student for p in self.features if p.loss == "attention_kl"],
                     "teacher": [p.teacher for p in self.features if p.loss == "attention_kl"]}
        if attention["student"]:  # attention probabilities come from eager attention layers
            from kdistill.torch.transformer import expose_attention

            expose_attention(student)
            expose_attention(teacher)
        self.student_tap = FeatureTap(student, [pair.student for pair in self.features], "features.student",
                                      attention["student"])
        self.teacher_tap = FeatureTap(teacher, [pair.teacher for pair in self.features], "features.teacher",
                                      attention["teacher"]) if self.features else None
        self.adapters = nn.ModuleDict()
        self.fused = task == "classification" and self.objective.parts == ["task", "kd"] and heads == 1
        if probe is not None:
            self._check_outputs(probe)

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def _check_outputs(self, probe: torch.Tensor) -> None:
        """Run both models once on a few samples: output shapes must agree, adapters get their widths."""
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            student_out = self.student(probe)
            if self.teacher is not None:
                teacher_out = self.teacher(probe)
                if student_out.shape[1:] != teacher_out.shape[1:]:
                    raise KdistillError(
                        f"teacher outputs {tuple(teacher_out.shape[1:])} per sample but student outputs "
                        f"{tuple(student_out.shape[1:])}: class counts must match"
                    )
        for index, pair in enumerate(self.features):
            student_feature, teacher_feature = self.student_tap.outputs[pair.student], self.teacher_tap.outputs[pair.teacher]
            if pair.loss in ADAPTED:
                self.adapters[str(index)] = ADAPTED[pair.loss](student_feature, teacher_feature, f"features.{index}")
            elif pair.loss == "attention" and student_feature.shape[2:] != teacher_feature.shape[2:]:
                raise KdistillError(
                    f"features.{index}: attention transfer needs equal spatial sizes, got student "
                    f"{tuple(self.student_tap.outputs[pair.student].shape[1:])} and teacher "
                    f"{tuple(self.teacher_tap.outputs[pair.teacher].shape[1:])}"
                )
        self.student.train(was_training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.student.parameters(), *self.adapters.parameters()]

    def teacher_side(self, teacher_out: torch.Tensor, sizes: list[int]) -> list[torch.Tensor] | list[SoftTargets]:
        """What each step of a chunk reads of the teacher's logits, the steps' rows one after
        another (``sizes``): the logits, or for the fused objective their :class:`SoftTargets`,
        made for the whole chunk at once."""
        if not self.fused:
            return list(torch.split(teacher_out, sizes))
        return SoftTargets.per_step(teacher_out, sizes, self.objective.losses["kd"].get("temperature", 1.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor, teacher_out: torch.Tensor | SoftTargets | None = None,
                share: Mapping[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, parts). ``teacher_out``: the teacher's logits for ``x`` (or what
        :meth:`teacher_side` made of them), None to run the teacher here. Under data parallelism
        ``share`` scales each part in the total by this process's share of the rows it averages
        (see :mod:`kdistill.torch.distributed`)."""
        student_out = self.student(x)
        labeled = len(y)
        if self.objective.terms and teacher_out is None:
            with torch.no_grad():
                teacher_out = self.teacher(x)
        if self.fused and labeled:
            weights = self.objective.weights
            scale = share or {"labeled": 1.0, "all": 1.0}
            targets = teacher_out if isinstance(teacher_out, SoftTargets) else self.teacher_side(teacher_out, [len(teacher_out)])[0]
            total, task, kd = task_and_kd(student_out, targets, y, weights["task"] * scale["labeled"],
                                          weights["kd"] * scale["all"], **self.objective.losses["kd"])
            return total, {"task": task, "kd": kd}
        parts: dict[str, torch.Tensor] = {}
        task_outputs, student_out = self.objective.split(student_out)
        if "task" in self.objective.weights and labeled:
            parts["task"] = Objective.task_part(
                lambda out: task_loss(out if labeled == len(x) else out[:labeled], y, self.task), task_outputs)
        for term in self.objective.terms:
            function = LOSS_FUNCTIONS[term.name]
            if term.reads_features:
                pairs = [(index, pair) for index, pair in enumerate(self.features) if pair.loss == term.name]
                extra = (x[:, MASK],) if term.info.masked else ()  # tokenized text: which tokens are real
                parts[term.name] = sum(function(self._student_feature(index, pair), self.teacher_tap.outputs[pair.teacher],
                                                *extra, **term.settings) for index, pair in pairs) / len(pairs)
            else:
                arguments = Objective.logit_arguments(term, student_out, teacher_out, y, labeled,
                                                      lambda z: F.softmax(z, dim=-1))
                parts[term.name] = function(*arguments, **term.settings)
        return self.objective.total(parts, share), parts

    def _student_feature(self, index: int, pair: FeaturePair) -> torch.Tensor:
        feature = self.student_tap.outputs[pair.student]
        return self.adapters[str(index)](feature) if str(index) in self.adapters else feature
