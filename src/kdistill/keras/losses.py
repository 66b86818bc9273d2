"""The loss catalogue in Keras 3: the names, signatures and numbers of ``kdistill.losses.reference``,
written with ``keras.ops`` only, so they run on the TensorFlow, JAX and PyTorch Keras backends.

Two layers:

- pure functions (``kd``, ``soft_ce``, ... and ``task_loss``): tensors in, a 0-dim tensor out,
  differentiable in the student input and finite at ±1e4 logits. Formulas, papers, shapes and
  reductions are documented once, in the reference; shape errors come from the reference's
  ``check_*`` functions, so they read the same in every framework.
- ``keras.distillation.DistillationLoss`` subclasses (``KD``, ``Hint``, ...), thin wrappers that
  hold a loss's settings and call the function, so each plugs into ``keras.distillation.Distiller``
  as well as into :class:`kdistill.keras.distiller.Distiller`. Their ``compute_loss`` takes
  ``(teacher_outputs, student_outputs)``, Keras's argument order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import ops
from keras.distillation import DistillationLoss, FeatureDistillation

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

Tensor = Any  # a backend tensor (tf.Tensor, jax.Array, torch.Tensor)


class _Static:
    """What the reference's ``check_*`` functions read (``.shape``), with sizes unknown while a
    graph is traced (TensorFlow's ``None``) read as -1: such sizes are checked when they are known."""

    def __init__(self, x: Tensor):
        self.shape = tuple(-1 if n is None else int(n) for n in x.shape)


def _check(check: Callable[..., None], loss: str, *named: Any, **options: Any) -> None:
    """Run a reference check with tensors read through :class:`_Static`: ``_check(f, loss, "a", a, "b", b)``."""
    check(loss, *(_Static(item) if hasattr(item, "shape") else item for item in named), **options)


def _mean(x: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """The mean in ``x``'s own dtype: ``keras.ops.mean`` computes float64 in float32 on the JAX
    and torch Keras backends."""
    count = ops.size(x) if axis is None else ops.shape(x)[axis]
    return ops.sum(x, axis=axis, keepdims=keepdims) / ops.cast(count, x.dtype)


def _at_least(x: Tensor, floor: float) -> Tensor:
    """max(x, floor) in ``x``'s dtype (``keras.ops.maximum`` returns float32 on the torch backend)."""
    return ops.where(x > floor, x, ops.zeros_like(x) + floor)


def _batch_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p ‖ q) summed over the last axis, averaged over rows, from log-probabilities."""
    return _mean(ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1))


def _tempered_kl(loss: str, names: tuple[str, str], layout: tuple[str, ...], s: Tensor, t: Tensor, T: float) -> Tensor:
    _check(check_same_shape, loss, names[0], s, names[1], t, layout)
    check_temperature(loss, T)
    return T**2 * _batch_kl(ops.log_softmax(t / T, axis=-1), ops.log_softmax(s / T, axis=-1))


def kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """T² · KL(p^T(t) ‖ p^T(s)), batchmean (Hinton et al. 2015). See kdistill.losses.reference.kd."""
    return _tempered_kl(
        "kd", ("student_logits", "teacher_logits"), ("batch", "classes"), student_logits, teacher_logits, temperature
    )


def soft_ce(student_logits: Tensor, teacher_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """−T² · Σ q · log p^T(s), batchmean (Hinton et al. 2015). See kdistill.losses.reference.soft_ce."""
    _check(check_same_shape, "soft_ce", "student_logits", student_logits, "teacher_probs", teacher_probs, ("batch", "classes"))
    check_temperature("soft_ce", temperature)
    log_p = ops.log_softmax(student_logits / temperature, axis=-1)
    return temperature**2 * -_mean(ops.sum(teacher_probs * log_p, axis=-1))


def _bce_with_logits(logits: Tensor, targets: Tensor) -> Tensor:
    return -_mean(targets * ops.log_sigmoid(logits) + (1.0 - targets) * ops.log_sigmoid(-logits))


def binary_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """T² · BCE(σ(t/T), σ(s/T)) for one-logit heads (seed 000). See kdistill.losses.reference.binary_kd."""
    _check(check_binary, "binary_kd", "student_logits", student_logits, "teacher_logits", teacher_logits)
    check_temperature("binary_kd", temperature)
    targets = ops.sigmoid(ops.reshape(teacher_logits, (-1,)) / temperature)
    return temperature**2 * _bce_with_logits(ops.reshape(student_logits, (-1,)) / temperature, targets)


def _mean_squared_error(loss: str, a_name: str, a: Tensor, b_name: str, b: Tensor) -> Tensor:
    _check(check_same_shape, loss, a_name, a, b_name, b)
    return _mean(ops.square(a - b))


def mse(student_outputs: Tensor, teacher_outputs: Tensor) -> Tensor:
    """mean (s − t)² (Ba & Caruana 2014). See kdistill.losses.reference.mse."""
    return _mean_squared_error("mse", "student_outputs", student_outputs, "teacher_outputs", teacher_outputs)


def listwise(student_scores: Tensor, teacher_scores: Tensor, temperature: float = 1.0) -> Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)) per query list. See kdistill.losses.reference.listwise."""
    return _tempered_kl(
        "listwise", ("student_scores", "teacher_scores"), ("queries", "candidates"),
        student_scores, teacher_scores, temperature,
    )


def hint(student_features_adapted: Tensor, teacher_features: Tensor) -> Tensor:
    """mean ‖A(f_s) − f_t‖² (FitNets, Romero et al. 2015). See kdistill.losses.reference.hint."""
    return _mean_squared_error(
        "hint", "student_features_adapted", student_features_adapted, "teacher_features", teacher_features
    )


def _unit(x: Tensor) -> Tensor:
    """x / max(‖x‖₂, NORMALIZE_EPS) over the last axis; the norm's gradient at x = 0 is 0, not NaN."""
    squared = ops.sum(ops.square(x), axis=-1, keepdims=True)
    positive = squared > 0
    norm = ops.where(positive, ops.sqrt(ops.where(positive, squared, ops.ones_like(squared))), ops.zeros_like(squared))
    return x / _at_least(norm, NORMALIZE_EPS)


def _attention_map(features: Tensor) -> Tensor:
    return _unit(ops.reshape(_mean(ops.square(features), axis=1), (ops.shape(features)[0], -1)))


def attention(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """mean ‖a(f_s)/‖a(f_s)‖ − a(f_t)/‖a(f_t)‖‖², a(f) = mean_c f_c², channels on axis 1
    (Zagoruyko & Komodakis 2017). See kdistill.losses.reference.attention."""
    _check(check_features, "attention", "student_features", student_features, "teacher_features", teacher_features)
    return _mean(ops.square(_attention_map(student_features) - _attention_map(teacher_features)))


def _target_split(z: Tensor, labels: Tensor, non_target: Tensor) -> Tensor:
    """log [p_gt, 1 − p_gt] of softmax(z), both computed in log space."""
    lse = ops.logsumexp(z, axis=1)
    target = ops.take_along_axis(z, labels[:, None], axis=1)[:, 0]
    return ops.stack([target - lse, ops.logsumexp(non_target, axis=1) - lse], axis=1)


def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """α·TCKD + β·NCKD (Zhao et al. 2022). See kdistill.losses.reference.dkd."""
    _check(check_same_shape, "dkd", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    _check(check_labels, "dkd", "student_logits", student_logits, "labels", labels)
    check_temperature("dkd", temperature)
    s, t = student_logits / temperature, teacher_logits / temperature
    labels = ops.cast(labels, "int32")
    # the non-target columns of each row, in order: column j, or j + 1 from the true class on
    columns = ops.arange(s.shape[1] - 1, dtype="int32")[None, :]
    columns = columns + ops.cast(columns >= labels[:, None], "int32")
    s_rest, t_rest = ops.take_along_axis(s, columns, axis=1), ops.take_along_axis(t, columns, axis=1)
    tckd = _batch_kl(_target_split(t, labels, t_rest), _target_split(s, labels, s_rest))
    nckd = _batch_kl(ops.log_softmax(t_rest, axis=1), ops.log_softmax(s_rest, axis=1))
    return temperature**2 * (alpha * tckd + beta * nckd)


def _mean_pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a - _mean(a, axis=1, keepdims=True), b - _mean(b, axis=1, keepdims=True)
    norms = ops.sqrt(ops.sum(ops.square(a), axis=1)) * ops.sqrt(ops.sum(ops.square(b), axis=1))
    return _mean(ops.sum(a * b, axis=1) / (norms + PEARSON_EPS))


def dist(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    """T² · (β · inter + γ · intra) Pearson terms (Huang et al. 2022). See kdistill.losses.reference.dist."""
    _check(check_same_shape, "dist", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    check_temperature("dist", temperature)
    p_s, p_t = ops.softmax(student_logits / temperature, axis=1), ops.softmax(teacher_logits / temperature, axis=1)
    inter = 1.0 - _mean_pearson(p_s, p_t)
    intra = 1.0 - _mean_pearson(ops.transpose(p_s), ops.transpose(p_t))
    return temperature**2 * (beta * inter + gamma * intra)


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    picked = ops.take_along_axis(ops.log_softmax(logits, axis=-1), ops.cast(labels, "int32")[:, None], axis=1)
    return -_mean(picked)


def hard(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """CE(s, argmax t) (DeiT, Touvron et al. 2021). See kdistill.losses.reference.hard."""
    _check(check_same_shape, "hard", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    return _cross_entropy(student_logits, ops.argmax(teacher_logits, axis=1))


def _cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    return 1.0 - ops.sum(_unit(a) * _unit(b), axis=-1)


def _token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """The mean over the real tokens (mask ≠ 0) of the whole batch; 0/0 = NaN when there is none."""
    real = ops.not_equal(mask, 0)
    total = ops.sum(ops.where(real, per_token, ops.zeros_like(per_token)))
    return total / ops.sum(ops.cast(real, per_token.dtype))


def hidden_cosine(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor) -> Tensor:
    """mean over real tokens of 1 − cos(h_s, h_t) (DistilBERT, Sanh et al. 2019). See
    kdistill.losses.reference.hidden_cosine."""
    _check(check_tokens, "hidden_cosine", "student_hidden", student_hidden, "teacher_hidden", teacher_hidden, mask,
           ("batch", "tokens", "hidden"))
    return _token_mean(_cosine_distance(student_hidden, teacher_hidden), mask)


def hidden_mse(student_hidden_projected: Tensor, teacher_hidden: Tensor, mask: Tensor) -> Tensor:
    """mean over real tokens of ‖W h_s − h_t‖² (TinyBERT, Jiao et al. 2020). See
    kdistill.losses.reference.hidden_mse."""
    _check(check_tokens, "hidden_mse", "student_hidden_projected", student_hidden_projected, "teacher_hidden",
           teacher_hidden, mask, ("batch", "tokens", "hidden"))
    return _token_mean(ops.sum(ops.square(student_hidden_projected - teacher_hidden), axis=-1), mask)


def attention_kl(student_attention: Tensor, teacher_attention: Tensor, mask: Tensor) -> Tensor:
    """KL(A_t ‖ A_s) over keys, averaged over heads and real queries (MiniLM, Wang et al. 2020).
    See kdistill.losses.reference.attention_kl."""
    _check(check_tokens, "attention_kl", "student_attention", student_attention, "teacher_attention",
           teacher_attention, mask, ("batch", "heads", "tokens", "tokens"))
    p, q = teacher_attention, student_attention
    p_log_p = ops.where(p > 0, p * ops.log(ops.where(p > 0, p, ops.ones_like(p))), ops.zeros_like(p))
    kl = ops.sum(p_log_p - p * ops.log(_at_least(q, PROBABILITY_FLOOR)), axis=-1)
    return _token_mean(_mean(kl, axis=1), mask)


def embedding(student_embedding: Tensor, teacher_embedding: Tensor, metric: str = "mse") -> Tensor:
    """mean ‖e_s − e_t‖² or 1 − cos of pooled sentence embeddings (Reimers & Gurevych 2020). See
    kdistill.losses.reference.embedding."""
    _check(check_same_shape, "embedding", "student_embedding", student_embedding, "teacher_embedding",
           teacher_embedding, ("batch", "dim"))
    check_metric("embedding", metric)
    if metric == "mse":
        return _mean(ops.sum(ops.square(student_embedding - teacher_embedding), axis=-1))
    return _mean(_cosine_distance(student_embedding, teacher_embedding))


def task_loss(outputs: Tensor, targets: Tensor, task: str) -> Tensor:
    """The supervised loss on true targets (CE / BCE / MSE / ListNet). See kdistill.losses.reference.task."""
    if task == "classification":
        _check(check_labels, "task", "outputs", outputs, "targets", targets)
        return _cross_entropy(outputs, targets)
    if task == "binary":
        _check(check_binary, "task", "outputs", outputs, "targets", targets)
        return _bce_with_logits(ops.reshape(outputs, (-1,)), ops.cast(ops.reshape(targets, (-1,)), outputs.dtype))
    if task == "regression":
        return _mean_squared_error("task", "outputs", outputs, "targets", ops.cast(targets, outputs.dtype))
    if task == "ranking":
        _check(check_same_shape, "task", "outputs", outputs, "targets", targets, ("queries", "candidates"))
        targets = ops.cast(targets, outputs.dtype)
        total = ops.sum(targets, axis=1, keepdims=True)
        q = targets / ops.where(total > 0, total, ops.ones_like(total))
        queries = _at_least(ops.sum(ops.cast(total > 0, outputs.dtype)), 1.0)
        return -ops.sum(q * ops.log_softmax(outputs, axis=1)) / queries
    raise ValueError(f"task: unknown task {task!r}; expected one of {', '.join(LOSSES_BY_TASK)}")


LOSS_FUNCTIONS: dict[str, Callable[..., Tensor]] = by_name(globals())
"""The catalogue's losses by name (``task`` is ``task_loss``)."""


# --- keras.distillation.DistillationLoss subclasses --------------------------------------------


class CatalogueLoss(DistillationLoss):
    """A catalogue loss with its settings, as a ``keras.distillation.DistillationLoss``:
    ``compute_loss(teacher_outputs, student_outputs)`` = ``function(student, teacher, **settings)``.
    Subclasses name the function; settings are the reference function's keyword arguments."""

    function: Callable[..., Tensor]

    def __init__(self, **settings: float):
        self.settings = settings

    def compute_loss(self, teacher_outputs: Tensor, student_outputs: Tensor, **kwargs: Any) -> Tensor:
        return type(self).function(student_outputs, teacher_outputs, **self.settings)

    def get_config(self) -> dict:
        return dict(self.settings)

    @classmethod
    def from_config(cls, config: dict) -> CatalogueLoss:
        return cls(**config)


class KD(CatalogueLoss):
    """``kd``: T² · KL(p^T(t) ‖ p^T(s)) (Hinton et al. 2015). ``KD(temperature=4.0)``."""

    function = staticmethod(kd)


class SoftCE(CatalogueLoss):
    """``soft_ce`` with q = p^T(t) from the teacher's logits (Hinton et al. 2015)."""

    function = staticmethod(soft_ce)

    def compute_loss(self, teacher_outputs: Tensor, student_outputs: Tensor, **kwargs: Any) -> Tensor:
        temperature = self.settings.get("temperature", 1.0)
        return soft_ce(student_outputs, ops.softmax(teacher_outputs / temperature, axis=-1), **self.settings)


class BinaryKD(CatalogueLoss):
    """``binary_kd``: T² · BCE(σ(t/T), σ(s/T)) for one-logit heads."""

    function = staticmethod(binary_kd)


class MSE(CatalogueLoss):
    """``mse``: mean (s − t)² on raw outputs (Ba & Caruana 2014)."""

    function = staticmethod(mse)


class Listwise(CatalogueLoss):
    """``listwise``: T² · KL over each query's candidate list."""

    function = staticmethod(listwise)


class DKD(CatalogueLoss):
    """``dkd``: α·TCKD + β·NCKD (Zhao et al. 2022). Needs the true classes: ``compute_loss(t, s,
    labels=y)``; kdistill's Distiller passes them (``keras.distillation.Distiller`` does not)."""

    function = staticmethod(dkd)

    def compute_loss(self, teacher_outputs: Tensor, student_outputs: Tensor, labels: Tensor | None = None,
                     **kwargs: Any) -> Tensor:
        if labels is None:
            raise ValueError("dkd: needs labels=(batch,) true classes; keras.distillation.Distiller does not pass them")
        return dkd(student_outputs, teacher_outputs, labels, **self.settings)


class DIST(CatalogueLoss):
    """``dist``: inter- and intra-class Pearson terms (Huang et al. 2022)."""

    function = staticmethod(dist)


class Hard(CatalogueLoss):
    """``hard``: CE(s, argmax t) (DeiT, Touvron et al. 2021)."""

    function = staticmethod(hard)


class Embedding(CatalogueLoss):
    """``embedding``: the student's pooled sentence embeddings (its outputs) against the teacher's,
    no labels (Reimers & Gurevych 2020). ``Embedding(metric="cosine")``."""

    function = staticmethod(embedding)


def channels_first(features: Tensor) -> Tensor:
    """Keras's channels-last feature maps (B, ..., C) → the catalogue's layout (B, C, ...)."""
    return features if len(features.shape) < 3 else ops.moveaxis(features, -1, 1)


class _FeatureLoss(FeatureDistillation):
    """A catalogue feature loss between two named layers, as a ``FeatureDistillation``: the
    Distillers tap ``student_layer_name`` and ``teacher_layer_name`` and pass their outputs."""

    function: Callable[[Tensor, Tensor], Tensor]

    def __init__(self, teacher_layer_name: str | None = None, student_layer_name: str | None = None):
        super().__init__(loss="mse", teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name)

    def compute_loss(self, teacher_outputs: Tensor, student_outputs: Tensor, **kwargs: Any) -> Tensor:
        return type(self).function(channels_first(student_outputs), channels_first(teacher_outputs))

    def get_config(self) -> dict:
        return {"teacher_layer_name": self.teacher_layer_name, "student_layer_name": self.student_layer_name}


class Hint(_FeatureLoss):
    """``hint``: mean ‖A(f_s) − f_t‖² (FitNets). Inside ``keras.distillation.Distiller`` there is no
    adapter (A = identity: equal widths); kdistill's Distiller adds a learnable one."""

    function = staticmethod(hint)


class Attention(_FeatureLoss):
    """``attention``: normalised spatial attention maps (Zagoruyko & Komodakis 2017), channels-last
    features moved to the catalogue's channels-first layout."""

    function = staticmethod(attention)


LOSS_CLASSES: dict[str, type[DistillationLoss]] = {
    "kd": KD, "soft_ce": SoftCE, "binary_kd": BinaryKD, "mse": MSE, "listwise": Listwise,
    "hint": Hint, "attention": Attention, "dkd": DKD, "dist": DIST, "hard": Hard, "embedding": Embedding,
}
"""The DistillationLoss subclass of each catalogue loss, by name; the token losses (``hidden_cosine``,
``hidden_mse``, ``attention_kl``) also read the padding mask, which ``compute_loss(teacher_outputs,
student_outputs)`` does not carry, so they are functions only."""
