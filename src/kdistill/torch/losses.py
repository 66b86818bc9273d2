"""The loss catalogue in PyTorch: the names, signatures and numbers of ``kdistill.losses.reference``.

Each loss takes tensors, returns a 0-dim tensor, is differentiable in the student inputs and stays
finite at ±1e4 logits. Formulas, papers, shapes and reductions are documented once, in the reference;
shape errors are raised by the reference's ``check_*`` functions, so they read the same.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from kdistill.losses import LOSSES_BY_TASK, by_name
from kdistill.losses.reference import (
    NORMALIZE_EPS,
    PEARSON_EPS,
    PROBABILITY_FLOOR,
    check_binary,
    check_features,
    check_labels,
    check_metric,
    check_same_shape,
    check_temperature,
    check_tokens,
)

Tensor = torch.Tensor


def _batch_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p ‖ q) summed over classes, averaged over rows, from log-probabilities."""
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


@functools.lru_cache(maxsize=64)
def _cached_constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.tensor(value, dtype=dtype, device=device)


def _constant(value: float, like: Tensor) -> Tensor | float:
    """``value`` as a 0-dim tensor of ``like``'s dtype and device, made once: multiplying by a
    Python number converts it to a tensor on every call, forward and backward, which costs as much
    as the multiplication itself on a small batch. Traced (``torch.compile``), the number itself."""
    if torch.compiler.is_compiling() or isinstance(value, Tensor):
        return value
    return _cached_constant(value, like.dtype, like.device)


VECTOR_FLOATS = 16
"""Classes below which the CPU's log_softmax over the last axis is slow: PyTorch's kernel for that
axis runs a scalar loop when a row is shorter than one vector of floats (16 with AVX-512), about
3× slower at 10 classes and 128 rows than its kernel over the first axis of the same numbers
(``benchmarks/torch_step_parts.py``)."""


def log_softmax_classes(z: Tensor) -> Tensor:
    """``log_softmax(z, dim=-1)`` of (..., rows, classes) logits, the same numbers, computed over
    the classes of the view with its last two axes swapped when there are fewer than
    :data:`VECTOR_FLOATS` classes on the CPU (the result is then a view with swapped strides,
    which the ops that read it accept). That kernel runs across the rows, so a row's last bit can
    depend on its place among them: the same rows give the same numbers as a block of their own
    (see :meth:`SoftTargets.per_step`)."""
    if z.shape[-1] < VECTOR_FLOATS and z.dim() >= 2 and z.device.type == "cpu":
        return F.log_softmax(z.transpose(-1, -2), dim=-2).transpose(-1, -2)
    return F.log_softmax(z, dim=-1)


def _tempered_kl(loss: str, names: tuple[str, str], layout: tuple[str, ...], s: Tensor, t: Tensor, T: float) -> Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)) averaged over rows, written for few autograd nodes:
    the teacher's probabilities carry the factor T²/B, so the sum is the loss (its constants are
    cached tensors, see :func:`_constant`)."""
    check_same_shape(loss, names[0], s, names[1], t, layout)
    check_temperature(loss, T)
    if T != 1:
        inverse = _constant(1.0 / T, s)
        s, t = s * inverse, t * inverse
    log_p = log_softmax_classes(t)
    weight = log_p.exp() * _constant(T * T / len(s) if len(s) else math.nan, s)  # batchmean: NaN for no rows
    return torch.sum(weight * (log_p - log_softmax_classes(s)))


def kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """See kdistill.losses.reference.kd."""
    return _tempered_kl(
        "kd", ("student_logits", "teacher_logits"), ("batch", "classes"), student_logits, teacher_logits, temperature
    )


class SoftTargets(NamedTuple):
    """A teacher's probabilities and log-probabilities at temperature T, rows as its logits'."""

    probs: Tensor
    log_probs: Tensor

    @classmethod
    def of(cls, teacher_logits: Tensor, temperature: float) -> "SoftTargets":
        """softmax and log_softmax of ``teacher_logits / temperature``."""
        return cls.per_step(teacher_logits, [len(teacher_logits)], temperature)[0]

    @classmethod
    def per_step(cls, teacher_logits: Tensor, sizes: list[int], temperature: float) -> list["SoftTargets"]:
        """The soft targets of every step of a chunk, whose rows lie one step after another
        (``sizes`` rows each): the numbers of :meth:`of` on each step's rows alone, bit for bit,
        from one call per run of steps of one size (a (steps, rows, classes) block)."""
        check_temperature("kd", temperature)
        z = teacher_logits if temperature == 1 else teacher_logits * _constant(1.0 / temperature, teacher_logits)
        targets, start = [], 0
        for size, run in itertools.groupby(sizes):
            count = len(list(run))
            log_probs = log_softmax_classes(z[start:start + count * size].view(count, size, -1))
            targets += [cls(*parts) for parts in zip(log_probs.exp().unbind(0), log_probs.unbind(0))]
            start += count * size
        return targets


class _TaskAndKd(torch.autograd.Function):
    """``w_task · CE(s[:L], y) + w_kd · kd(s, t, T)`` as one autograd node, the teacher given as
    its :class:`SoftTargets` p at T, with the gradient in closed form:
    ∂/∂s = w_task/L · (softmax(s[:L]) − onehot(y)) on the L labeled rows
    + w_kd · T/B · (softmax(s/T) − p) on all B rows. Returns (total, task, kd); the parts are
    values for the record, not differentiated. Its scalars are cached tensors (:func:`_constant`)."""

    @staticmethod
    def forward(ctx, s: Tensor, p: Tensor, log_p: Tensor, y: Tensor, w_task: float, w_kd: float,
                T: float):  # noqa: N803
        labeled, rows = len(y), len(s)
        log_q_labeled = log_softmax_classes(s if labeled == rows else s[:labeled])
        task = F.nll_loss(log_q_labeled, y)
        log_q = log_softmax_classes(s if T == 1 else s * _constant(1.0 / T, s))
        kd = torch.sum(p * (log_p - log_q)).mul_(_constant(T * T / rows, s))
        ctx.save_for_backward(log_q_labeled, log_q, p, y)
        ctx.scales = (w_task / labeled, w_kd * T / rows)
        ctx.mark_non_differentiable(task, kd)
        return torch.add(task * _constant(w_task, s), kd, alpha=w_kd), task, kd

    @staticmethod
    def backward(ctx, grad_total: Tensor, _grad_task: Tensor, _grad_kd: Tensor):
        log_q_labeled, log_q, p, y = ctx.saved_tensors
        task_scale, kd_scale = ctx.scales
        grad = log_q.exp().sub_(p).mul_(_constant(kd_scale, p))
        labeled = grad[:len(y)].add_(log_q_labeled.exp(), alpha=task_scale)
        labeled.scatter_add_(1, y[:, None], _constant(-task_scale, p).expand(len(y), 1))
        return grad.mul_(grad_total), None, None, None, None, None, None


def task_and_kd(student_logits: Tensor, teacher: SoftTargets, labels: Tensor, task_weight: float,
                kd_weight: float, temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """(task_weight · task + kd_weight · kd, task, kd) for classification, the labeled rows first:
    the numbers of :func:`task_loss` on ``student_logits[:len(labels)]`` and :func:`kd` on all
    rows, with the teacher's side (``SoftTargets.of(teacher_logits, temperature)``) computed once
    per chunk of steps; one node whose backward is a few in-place ops (the commonest objective's
    step, fused)."""
    check_same_shape("kd", "student_logits", student_logits, "teacher_logits", teacher.probs, ("batch", "classes"))
    check_labels("task", "outputs", student_logits[:len(labels)], "targets", labels)
    check_temperature("kd", temperature)
    if torch.compiler.is_compiling():  # traced: plain ops, which the compiler fuses (the node above breaks its graph)
        labeled, rows = len(labels), len(student_logits)
        task = F.cross_entropy(student_logits if labeled == rows else student_logits[:labeled], labels)
        log_q = F.log_softmax(student_logits / temperature, dim=-1)
        kd = (teacher.probs * (teacher.log_probs - log_q)).sum() * (temperature * temperature / rows)
        return task_weight * task + kd_weight * kd, task.detach(), kd.detach()
    return _TaskAndKd.apply(student_logits, teacher.probs, teacher.log_probs, labels, task_weight, kd_weight,
                            temperature)


def soft_ce(student_logits: Tensor, teacher_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """See kdistill.losses.reference.soft_ce."""
    check_same_shape("soft_ce", "student_logits", student_logits, "teacher_probs", teacher_probs, ("batch", "classes"))
    check_temperature("soft_ce", temperature)
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * -(teacher_probs * log_p).sum(dim=-1).mean()


def binary_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """See kdistill.losses.reference.binary_kd."""
    check_binary("binary_kd", "student_logits", student_logits, "teacher_logits", teacher_logits)
    check_temperature("binary_kd", temperature)
    targets = torch.sigmoid(teacher_logits.reshape(-1) / temperature)
    return temperature**2 * F.binary_cross_entropy_with_logits(student_logits.reshape(-1) / temperature, targets)


def _mean_squared_error(loss: str, a_name: str, a: Tensor, b_name: str, b: Tensor) -> Tensor:
    check_same_shape(loss, a_name, a, b_name, b)
    return F.mse_loss(a, b)


def mse(student_outputs: Tensor, teacher_outputs: Tensor) -> Tensor:
    """See kdistill.losses.reference.mse."""
    return _mean_squared_error("mse", "student_outputs", student_outputs, "teacher_outputs", teacher_outputs)


def listwise(student_scores: Tensor, teacher_scores: Tensor, temperature: float = 1.0) -> Tensor:
    """See kdistill.losses.reference.listwise."""
    return _tempered_kl(
        "listwise",
        ("student_scores", "teacher_scores"),
        ("queries", "candidates"),
        student_scores,
        teacher_scores,
        temperature,
    )


def hint(student_features_adapted: Tensor, teacher_features: Tensor) -> Tensor:
    """See kdistill.losses.reference.hint."""
    return _mean_squared_error(
        "hint", "student_features_adapted", student_features_adapted, "teacher_features", teacher_features
    )


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1, eps=NORMALIZE_EPS)


def _attention_map(features: Tensor) -> Tensor:
    return _unit(features.pow(2).mean(dim=1).flatten(1))


def attention(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """See kdistill.losses.reference.attention."""
    check_features("attention", "student_features", student_features, "teacher_features", teacher_features)
    return F.mse_loss(_attention_map(student_features), _attention_map(teacher_features))


def _non_target(z: Tensor, gt: Tensor) -> Tensor:
    return z[~gt].reshape(len(z), -1)


def _target_split(z: Tensor, gt: Tensor) -> Tensor:
    """log [p_gt, 1 − p_gt] of softmax(z), both computed in log space."""
    lse = torch.logsumexp(z, dim=1)
    return torch.stack([z[gt] - lse, torch.logsumexp(_non_target(z, gt), dim=1) - lse], dim=1)


def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """See kdistill.losses.reference.dkd."""
    check_same_shape("dkd", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    check_labels("dkd", "student_logits", student_logits, "labels", labels)
    check_temperature("dkd", temperature)
    s, t = student_logits / temperature, teacher_logits / temperature
    gt = F.one_hot(labels, s.shape[1]).bool()
    tckd = _batch_kl(_target_split(t, gt), _target_split(s, gt))
    nckd = _batch_kl(F.log_softmax(_non_target(t, gt), dim=1), F.log_softmax(_non_target(s, gt), dim=1))
    return temperature**2 * (alpha * tckd + beta * nckd)


def _mean_pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    return ((a * b).sum(dim=1) / (norms + PEARSON_EPS)).mean()


def dist(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    """See kdistill.losses.reference.dist."""
    check_same_shape("dist", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    check_temperature("dist", temperature)
    p_s, p_t = F.softmax(student_logits / temperature, dim=1), F.softmax(teacher_logits / temperature, dim=1)
    inter, intra = 1.0 - _mean_pearson(p_s, p_t), 1.0 - _mean_pearson(p_s.T, p_t.T)
    return temperature**2 * (beta * inter + gamma * intra)


def hard(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """See kdistill.losses.reference.hard."""
    check_same_shape("hard", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))


def _cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    return 1.0 - (_unit(a) * _unit(b)).sum(dim=-1)


def _token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """The mean over the real tokens (mask ≠ 0) of the whole batch; 0/0 = NaN when there is none."""
    real = mask != 0
    return torch.where(real, per_token, 0.0).sum() / real.sum().to(per_token.dtype)


def hidden_cosine(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor) -> Tensor:
    """See kdistill.losses.reference.hidden_cosine."""
    check_tokens("hidden_cosine", "student_hidden", student_hidden, "teacher_hidden", teacher_hidden, mask,
                 ("batch", "tokens", "hidden"))
    return _token_mean(_cosine_distance(student_hidden, teacher_hidden), mask)


def hidden_mse(student_hidden_projected: Tensor, teacher_hidden: Tensor, mask: Tensor) -> Tensor:
    """See kdistill.losses.reference.hidden_mse."""
    check_tokens("hidden_mse", "student_hidden_projected", student_hidden_projected, "teacher_hidden", teacher_hidden,
                 mask, ("batch", "tokens", "hidden"))
    return _token_mean((student_hidden_projected - teacher_hidden).pow(2).sum(dim=-1), mask)


def attention_kl(student_attention: Tensor, teacher_attention: Tensor, mask: Tensor) -> Tensor:
    """See kdistill.losses.reference.attention_kl."""
    check_tokens("attention_kl", "student_attention", student_attention, "teacher_attention", teacher_attention, mask,
                 ("batch", "heads", "tokens", "tokens"))
    p, q = teacher_attention, student_attention
    log_q = torch.log(torch.where(q > PROBABILITY_FLOOR, q, PROBABILITY_FLOOR))
    kl = (torch.xlogy(p, p) - p * log_q).sum(dim=-1)
    return _token_mean(kl.mean(dim=1), mask)


def embedding(student_embedding: Tensor, teacher_embedding: Tensor, metric: str = "mse") -> Tensor:
    """See kdistill.losses.reference.embedding."""
    check_same_shape("embedding", "student_embedding", student_embedding, "teacher_embedding", teacher_embedding,
                     ("batch", "dim"))
    check_metric("embedding", metric)
    if metric == "mse":
        return (student_embedding - teacher_embedding).pow(2).sum(dim=-1).mean()
    return _cosine_distance(student_embedding, teacher_embedding).mean()


def task_loss(outputs: Tensor, targets: Tensor, task: str) -> Tensor:
    """See kdistill.losses.reference.task."""
    if task == "classification":
        check_labels("task", "outputs", outputs, "targets", targets)
        return F.cross_entropy(outputs, targets)
    if task == "binary":
        check_binary("task", "outputs", outputs, "targets", targets)
        return F.binary_cross_entropy_with_logits(outputs.reshape(-1), targets.reshape(-1).to(outputs.dtype))
    if task == "regression":
        return _mean_squared_error("task", "outputs", outputs, "targets", targets)
    if task == "ranking":
        check_same_shape("task", "outputs", outputs, "targets", targets, ("queries", "candidates"))
        total = targets.sum(dim=1, keepdim=True)
        q = targets / torch.where(total > 0, total, torch.ones_like(total))
        return -(q * F.log_softmax(outputs, dim=1)).sum() / torch.count_nonzero(total).clamp(min=1)
    raise ValueError(f"task: unknown task {task!r}; expected one of {', '.join(LOSSES_BY_TASK)}")


LOSS_FUNCTIONS: dict[str, Callable[..., Tensor]] = by_name(globals())
"""The catalogue's losses by name (``task`` is ``task_loss``)."""
