"""The loss catalogue in ``jax.numpy``: pure functions with the names, signatures, defaults and
numbers of ``kdistill.losses.reference`` (the numpy float64 spec).

Each loss takes arrays, returns a 0-dim array in the inputs' float dtype, is differentiable in its
first argument with ``jax.grad``, works under ``jax.jit`` (shapes are checked at trace time by the
reference's ``check_*`` functions, so errors read the same in every backend) and stays finite at
±1e4 logits: everything is computed in log space. Notation: s = student logits, t = teacher
logits, T = temperature, p^T(z) = softmax(z / T); "batchmean" = summed over classes, averaged
over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

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

Array = jax.Array


def _batch_kl(log_p: Array, log_q: Array) -> Array:
    """KL(p ‖ q) summed over the last axis, averaged over rows, from log-probabilities."""
    return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))


def _tempered_kl(loss: str, names: tuple[str, str], layout: tuple[str, ...], s: Array, t: Array, T: float) -> Array:
    check_same_shape(loss, names[0], s, names[1], t, layout)
    check_temperature(loss, T)
    return T**2 * _batch_kl(jax.nn.log_softmax(t / T, axis=-1), jax.nn.log_softmax(s / T, axis=-1))


def _cross_entropy(logits: Array, labels: Array) -> Array:
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=1)
    return -jnp.mean(picked)


def _bce_with_logits(logits: Array, targets: Array) -> Array:
    return -jnp.mean(targets * jax.nn.log_sigmoid(logits) + (1.0 - targets) * jax.nn.log_sigmoid(-logits))


def _mean_squared_error(loss: str, a_name: str, a: Array, b_name: str, b: Array) -> Array:
    check_same_shape(loss, a_name, a, b_name, b)
    return jnp.mean((a - b) ** 2)


def _safe_norm(x: Array) -> Array:
    """‖x‖₂ over the last axis with gradient 0 (not NaN) at x = 0, as ``torch.linalg.vector_norm``."""
    squared = jnp.sum(x * x, axis=-1)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def kd(student_logits: Array, teacher_logits: Array, temperature: float = 1.0) -> Array:
    """Knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network").

    loss = T² · KL(p^T(t) ‖ p^T(s)), batchmean. T² keeps the gradient scale independent of T.

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes).
      temperature: T > 0.

    Returns:
      Scalar loss.
    """
    return _tempered_kl(
        "kd", ("student_logits", "teacher_logits"), ("batch", "classes"), student_logits, teacher_logits, temperature
    )


def soft_ce(student_logits: Array, teacher_probs: Array, temperature: float = 1.0) -> Array:
    """Soft-target cross-entropy for teachers known by probabilities (Hinton et al. 2015).

    loss = −T² · Σ_c q_c · log p^T(s)_c, batchmean; q is used as given (not re-normalised).

    Args:
      student_logits: (batch, classes).
      teacher_probs: (batch, classes) probabilities q.
      temperature: T > 0, applied to the student logits only.

    Returns:
      Scalar loss.
    """
    check_same_shape("soft_ce", "student_logits", student_logits, "teacher_probs", teacher_probs, ("batch", "classes"))
    check_temperature("soft_ce", temperature)
    log_p = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    return temperature**2 * -jnp.mean(jnp.sum(teacher_probs * log_p, axis=-1))


def binary_kd(student_logits: Array, teacher_logits: Array, temperature: float = 1.0) -> Array:
    """Binary distillation for one-logit heads (seed 000; Hinton et al. 2015 on two classes).

    loss = T² · mean BCE(σ(t/T), σ(s/T)) = −T² · mean[q·logσ(s/T) + (1 − q)·logσ(−s/T)], q = σ(t/T).

    Args:
      student_logits: (batch,) or (batch, 1).
      teacher_logits: (batch,) or (batch, 1).
      temperature: T > 0.

    Returns:
      Scalar loss.
    """
    check_binary("binary_kd", "student_logits", student_logits, "teacher_logits", teacher_logits)
    check_temperature("binary_kd", temperature)
    targets = jnp.exp(jax.nn.log_sigmoid(teacher_logits.reshape(-1) / temperature))
    return temperature**2 * _bce_with_logits(student_logits.reshape(-1) / temperature, targets)


def mse(student_outputs: Array, teacher_outputs: Array) -> Array:
    """Output matching (Ba & Caruana 2014, "Do Deep Nets Really Need to be Deep?").

    loss = mean (s − t)² over every element; for regression outputs and ranking scores.

    Args:
      student_outputs: any shape.
      teacher_outputs: the same shape.

    Returns:
      Scalar loss.
    """
    return _mean_squared_error("mse", "student_outputs", student_outputs, "teacher_outputs", teacher_outputs)


def listwise(student_scores: Array, teacher_scores: Array, temperature: float = 1.0) -> Array:
    """Listwise ranking distillation (ListNet top-one probabilities, Cao et al. 2007).

    loss = T² · KL(softmax(t/T) ‖ softmax(s/T)) over each query's candidates, averaged over queries.

    Args:
      student_scores: (queries, candidates).
      teacher_scores: (queries, candidates).
      temperature: T > 0.

    Returns:
      Scalar loss.
    """
    return _tempered_kl(
        "listwise", ("student_scores", "teacher_scores"), ("queries", "candidates"),
        student_scores, teacher_scores, temperature,
    )


def hint(student_features_adapted: Array, teacher_features: Array) -> Array:
    """Hint loss (FitNets, Romero et al. 2015).

    loss = mean (A(f_s) − f_t)² over every element; the adapter A is applied by the caller.

    Args:
      student_features_adapted: A(f_s), any shape.
      teacher_features: f_t, the same shape.

    Returns:
      Scalar loss.
    """
    return _mean_squared_error(
        "hint", "student_features_adapted", student_features_adapted, "teacher_features", teacher_features
    )


def _unit(x: Array) -> Array:
    """x / max(‖x‖₂, NORMALIZE_EPS) over the last axis."""
    return x / jnp.maximum(_safe_norm(x), NORMALIZE_EPS)[..., None]


def _attention_map(features: Array) -> Array:
    return _unit(jnp.mean(features**2, axis=1).reshape(features.shape[0], -1))


def attention(student_features: Array, teacher_features: Array) -> Array:
    """Attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention").

    loss = mean (a(f_s) − a(f_t))², a(f) = mean_c f_c² flattened per example and divided by
    max(‖·‖₂, 1e-12). Channel counts may differ; batch and spatial sizes must match.

    Args:
      student_features: (batch, channels_s, ...).
      teacher_features: (batch, channels_t, ...).

    Returns:
      Scalar loss.
    """
    check_features("attention", "student_features", student_features, "teacher_features", teacher_features)
    return jnp.mean((_attention_map(student_features) - _attention_map(teacher_features)) ** 2)


def _non_target(z: Array, labels: Array) -> Array:
    """(batch, classes − 1): each row without its label's column, order kept (jit-friendly gather)."""
    rest = jnp.argsort(jnp.arange(z.shape[1])[None, :] == labels[:, None], axis=1, stable=True)[:, :-1]
    return jnp.take_along_axis(z, rest, axis=1)


def _target_split(z: Array, labels: Array) -> Array:
    """log [p_gt, 1 − p_gt] of softmax(z), both computed in log space."""
    lse = jax.nn.logsumexp(z, axis=1)
    target = jnp.take_along_axis(z, labels[:, None], axis=1)[:, 0]
    return jnp.stack([target - lse, jax.nn.logsumexp(_non_target(z, labels), axis=1) - lse], axis=1)


def dkd(
    student_logits: Array,
    teacher_logits: Array,
    labels: Array,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Array:
    """Decoupled KD (Zhao et al. 2022, "Decoupled Knowledge Distillation"; mdistiller's formula).

    loss = α · TCKD + β · NCKD with TCKD = T² · KL(b^T(t) ‖ b^T(s)), b = [p_gt, 1 − p_gt], and
    NCKD = T² · KL(p̂^T(t) ‖ p̂^T(s)), p̂ = softmax over the non-target logits; each batchmean.

    Args:
      student_logits: (batch, classes), classes ≥ 2.
      teacher_logits: (batch, classes).
      labels: (batch,) integer true classes.
      alpha: weight of TCKD.
      beta: weight of NCKD.
      temperature: T > 0.

    Returns:
      Scalar loss.
    """
    check_same_shape("dkd", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    check_labels("dkd", "student_logits", student_logits, "labels", labels)
    check_temperature("dkd", temperature)
    s, t = student_logits / temperature, teacher_logits / temperature
    tckd = _batch_kl(_target_split(t, labels), _target_split(s, labels))
    nckd = _batch_kl(jax.nn.log_softmax(_non_target(t, labels), axis=1), jax.nn.log_softmax(_non_target(s, labels), axis=1))
    return temperature**2 * (alpha * tckd + beta * nckd)


def _mean_pearson(a: Array, b: Array) -> Array:
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    return jnp.mean(jnp.sum(a * b, axis=1) / (_safe_norm(a) * _safe_norm(b) + PEARSON_EPS))


def dist(
    student_logits: Array,
    teacher_logits: Array,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Array:
    """DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher").

    loss = T² · (β · inter + γ · intra) on p = p^T: inter = 1 − mean_i Pearson(p_s[i, :], p_t[i, :]),
    intra = 1 − mean_c Pearson(p_s[:, c], p_t[:, c]), Pearson(a, b) = ā·b̄ / (‖ā‖‖b̄‖ + 1e-8).

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes).
      beta: weight of the inter-class term.
      gamma: weight of the intra-class term.
      temperature: T > 0.

    Returns:
      Scalar loss.
    """
    check_same_shape("dist", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    check_temperature("dist", temperature)
    p_s = jax.nn.softmax(student_logits / temperature, axis=1)
    p_t = jax.nn.softmax(teacher_logits / temperature, axis=1)
    inter, intra = 1.0 - _mean_pearson(p_s, p_t), 1.0 - _mean_pearson(p_s.T, p_t.T)
    return temperature**2 * (beta * inter + gamma * intra)


def hard(student_logits: Array, teacher_logits: Array) -> Array:
    """Hard-label distillation (DeiT, Touvron et al. 2021).

    loss = CE(s, argmax t), batchmean; ties go to the first maximal class.

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes).

    Returns:
      Scalar loss.
    """
    check_same_shape("hard", "student_logits", student_logits, "teacher_logits", teacher_logits, ("batch", "classes"))
    return _cross_entropy(student_logits, jnp.argmax(teacher_logits, axis=1))


def _cosine_distance(a: Array, b: Array) -> Array:
    return 1.0 - jnp.sum(_unit(a) * _unit(b), axis=-1)


def _token_mean(per_token: Array, mask: Array) -> Array:
    """The mean over the real tokens (mask ≠ 0) of the whole batch; 0/0 = NaN when there is none."""
    real = mask != 0
    return jnp.sum(jnp.where(real, per_token, 0.0)) / jnp.sum(real).astype(per_token.dtype)


def hidden_cosine(student_hidden: Array, teacher_hidden: Array, mask: Array) -> Array:
    """Hidden-state cosine loss (DistilBERT, Sanh et al. 2019).

    loss = mean over the real tokens of the batch (mask ≠ 0, all pooled) of 1 − cos(h_s, h_t), each
    side divided by max(‖·‖₂, 1e-12); NaN if the mask has no real token.

    Args:
      student_hidden: (batch, tokens, hidden).
      teacher_hidden: the same shape.
      mask: (batch, tokens), nonzero for real tokens, 0 for padding.

    Returns:
      Scalar loss.
    """
    check_tokens("hidden_cosine", "student_hidden", student_hidden, "teacher_hidden", teacher_hidden, mask,
                 ("batch", "tokens", "hidden"))
    return _token_mean(_cosine_distance(student_hidden, teacher_hidden), mask)


def hidden_mse(student_hidden_projected: Array, teacher_hidden: Array, mask: Array) -> Array:
    """Hidden-state MSE through a learned projection (TinyBERT, Jiao et al. 2020).

    loss = mean over the real tokens of the batch of ‖W h_s − h_t‖², summed over the hidden axis;
    W is applied by the caller. NaN if the mask has no real token.

    Args:
      student_hidden_projected: W h_s, (batch, tokens, hidden_teacher).
      teacher_hidden: the same shape.
      mask: (batch, tokens), nonzero for real tokens, 0 for padding.

    Returns:
      Scalar loss.
    """
    check_tokens("hidden_mse", "student_hidden_projected", student_hidden_projected, "teacher_hidden", teacher_hidden,
                 mask, ("batch", "tokens", "hidden"))
    return _token_mean(jnp.sum((student_hidden_projected - teacher_hidden) ** 2, axis=-1), mask)


def attention_kl(student_attention: Array, teacher_attention: Array, mask: Array) -> Array:
    """Self-attention distribution transfer (MiniLM, Wang et al. 2020).

    loss = KL(A_t ‖ A_s) summed over keys, averaged over heads and the real queries of the batch:
    Σ_k p_k (log p_k − log max(q_k, 1e-12)); a teacher 0 contributes 0, a student probability below
    the floor is read as the floor (finite, no gradient). NaN if the mask has no real token.

    Args:
      student_attention: (batch, heads, tokens, tokens) probabilities over the keys.
      teacher_attention: the same shape.
      mask: (batch, tokens), nonzero for real tokens, 0 for padding; selects the queries.

    Returns:
      Scalar loss.
    """
    check_tokens("attention_kl", "student_attention", student_attention, "teacher_attention", teacher_attention, mask,
                 ("batch", "heads", "tokens", "tokens"))
    p, q = teacher_attention, student_attention
    log_q = jnp.log(jnp.where(q > PROBABILITY_FLOOR, q, PROBABILITY_FLOOR))
    kl = jnp.sum(jax.scipy.special.xlogy(p, p) - p * log_q, axis=-1)
    return _token_mean(jnp.mean(kl, axis=1), mask)


def embedding(student_embedding: Array, teacher_embedding: Array, metric: str = "mse") -> Array:
    """Embedding distillation, no labels (Reimers & Gurevych 2020; how sentence-transformers shrinks a model).

    loss = mean over rows of ‖e_s − e_t‖² (metric "mse") or of 1 − cos(e_s, e_t) (metric "cosine").

    Args:
      student_embedding: (batch, dim) pooled sentence embeddings.
      teacher_embedding: the same shape.
      metric: "mse" or "cosine".

    Returns:
      Scalar loss.
    """
    check_same_shape("embedding", "student_embedding", student_embedding, "teacher_embedding", teacher_embedding,
                     ("batch", "dim"))
    check_metric("embedding", metric)
    if metric == "mse":
        return jnp.mean(jnp.sum((student_embedding - teacher_embedding) ** 2, axis=-1))
    return jnp.mean(_cosine_distance(student_embedding, teacher_embedding))


def task_loss(outputs: Array, targets: Array, task: str) -> Array:
    """The supervised loss on true targets, by task (see ``kdistill.losses.reference.task``).

    classification: CE(s, y); binary: BCE with logits; regression: mean (s − y)²; ranking:
    ListNet (Cao et al. 2007), −Σ q · log softmax(s) with q = y / Σy, averaged over queries with Σy > 0.
    """
    if task == "classification":
        check_labels("task", "outputs", outputs, "targets", targets)
        return _cross_entropy(outputs, targets)
    if task == "binary":
        check_binary("task", "outputs", outputs, "targets", targets)
        return _bce_with_logits(outputs.reshape(-1), targets.reshape(-1).astype(outputs.dtype))
    if task == "regression":
        return _mean_squared_error("task", "outputs", outputs, "targets", targets)
    if task == "ranking":
        check_same_shape("task", "outputs", outputs, "targets", targets, ("queries", "candidates"))
        total = targets.sum(axis=1, keepdims=True)
        q = targets / jnp.where(total > 0, total, 1.0)
        queries = jnp.maximum(jnp.count_nonzero(total), 1)
        return -jnp.sum(q * jax.nn.log_softmax(outputs, axis=1)) / queries.astype(outputs.dtype)
    raise ValueError(f"task: unknown task {task!r}; expected one of {', '.join(LOSSES_BY_TASK)}")


LOSS_FUNCTIONS: dict[str, Callable[..., Array]] = by_name(globals())
"""The catalogue's losses by name (``task`` is ``task_loss``)."""
