"""The loss catalogue in numpy float64: the source of truth every backend is tested against.

Each loss takes arrays (anything ``np.asarray`` accepts), computes in float64 and returns a python
float. Notation: s = student logits, t = teacher logits, T = temperature, p^T(z) = softmax(z / T),
B = batch size. "batchmean" = summed over classes, averaged over the batch. Logits are handled in
log space (log-softmax, log-sigmoid), so values of ±1e4 give finite losses.

The ``check_*`` functions read only ``.shape``; every backend calls them, so a shape error reads
the same in every framework.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from kdistill.losses import LOSSES_BY_TASK

NORMALIZE_EPS = 1e-12
"""Vectors are divided by max(‖v‖, eps), as ``torch.nn.functional.normalize`` does: attention maps,
and the hidden states and embeddings whose cosine a loss takes (a zero vector has cosine 0)."""
PROBABILITY_FLOOR = 1e-12
"""``attention_kl`` reads the student's log-probability as log(max(q, floor)): a student probability
of 0 where the teacher's is p > 0 (a softmax that underflowed) costs p · (log p − log 1e-12), not +∞,
and passes no gradient to q. Probabilities ≥ the floor are read exactly."""
PEARSON_EPS = 1e-8
"""Added to the denominator of DIST's Pearson correlation, as in the official code."""
METRICS = ("mse", "cosine")
"""What ``embedding`` compares: squared distance or cosine distance."""


# --- shape checks (shared by every backend) -------------------------------------------------


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in x.shape)


def check_same_shape(loss: str, a_name: str, a: Any, b_name: str, b: Any, layout: tuple[str, ...] = ()) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same shape, with the axes ``layout`` names if given."""
    expected = f"({', '.join(layout)})"
    for name, x in ((a_name, a), (b_name, b)):
        if layout and len(x.shape) != len(layout):
            raise ValueError(f"{loss}: {name} must be {expected}, got shape {_shape(x)}")
    if _shape(a) != _shape(b):
        differ = dict.fromkeys(axis for axis, m, n in zip(layout, _shape(a), _shape(b)) if m != n)
        raise ValueError(
            f"{loss}: {a_name} has shape {_shape(a)} but {b_name} has shape {_shape(b)}; they must match"
            + (f" as {expected}; they differ in {', '.join(differ)}" if layout else "")
        )


def check_tokens(loss: str, a_name: str, a: Any, b_name: str, b: Any, mask: Any, layout: tuple[str, ...]) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same shape, with the axes ``layout`` names
    (its axes named "tokens" all of one size), and ``mask`` is (batch, tokens) of that size."""
    check_same_shape(loss, a_name, a, b_name, b, layout)
    tokens = {n for axis, n in zip(layout, _shape(a)) if axis == "tokens"}
    if len(tokens) > 1:
        raise ValueError(f"{loss}: {a_name} has shape {_shape(a)}; its token axes must be of one size as "
                         f"({', '.join(layout)})")
    expected = (_shape(a)[0], *tokens)
    if _shape(mask) != expected:
        raise ValueError(f"{loss}: mask has shape {_shape(mask)} but {a_name} has shape {_shape(a)}; mask must be"
                         f" (batch, tokens) = {expected}")


def check_metric(loss: str, metric: str) -> None:
    """Raise ValueError unless ``metric`` is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"{loss}: metric must be one of {', '.join(map(repr, METRICS))}, got {metric!r}")


def check_binary(loss: str, a_name: str, a: Any, b_name: str, b: Any) -> None:
    """Raise ValueError unless ``a`` and ``b`` are each (batch,) or (batch, 1), with the same batch."""
    for name, x in ((a_name, a), (b_name, b)):
        if not (len(x.shape) == 1 or (len(x.shape) == 2 and x.shape[1] == 1)):
            raise ValueError(f"{loss}: {name} must be (batch,) or (batch, 1), got shape {_shape(x)}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{loss}: {a_name} has shape {_shape(a)} but {b_name} has shape {_shape(b)}; the batch sizes differ"
        )


def check_labels(loss: str, logits_name: str, logits: Any, labels_name: str, labels: Any) -> None:
    """Raise ValueError unless ``logits`` is (batch, classes) and ``labels`` is (batch,)."""
    if len(logits.shape) != 2:
        raise ValueError(f"{loss}: {logits_name} must be (batch, classes), got shape {_shape(logits)}")
    if _shape(labels) != _shape(logits)[:1]:
        raise ValueError(
            f"{loss}: {labels_name} has shape {_shape(labels)} but {logits_name} has shape {_shape(logits)};"
            f" {labels_name} must be (batch,)"
        )


def check_features(loss: str, a_name: str, a: Any, b_name: str, b: Any) -> None:
    """Raise ValueError unless ``a`` and ``b`` are (batch, channels, ...) with equal batch and spatial sizes."""
    if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[0] != b.shape[0] or _shape(a)[2:] != _shape(b)[2:]:
        raise ValueError(
            f"{loss}: {a_name} has shape {_shape(a)} but {b_name} has shape {_shape(b)}; both must be"
            " (batch, channels, ...) with the same batch and spatial sizes (channels may differ)"
        )


def check_temperature(loss: str, temperature: float) -> None:
    """Raise ValueError unless the temperature is positive."""
    if not temperature > 0:
        raise ValueError(f"{loss}: temperature must be > 0, got {temperature}")


def _check_label_values(loss: str, labels: np.ndarray, classes: int) -> None:
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{loss}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{loss}: labels must lie in [0, {classes}), got values from {labels.min()} to {labels.max()}")


# --- numerics ---------------------------------------------------------------------------------


def _f64(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _logsumexp(z: np.ndarray, keepdims: bool = False) -> np.ndarray:
    top = np.max(z, axis=-1, keepdims=True)
    out = top + np.log(np.sum(np.exp(z - top), axis=-1, keepdims=True))
    return out if keepdims else out[..., 0]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    return z - _logsumexp(z, keepdims=True)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _batch_kl(log_p: np.ndarray, log_q: np.ndarray) -> float:
    """KL(p ‖ q) summed over the last axis, averaged over rows, from log-probabilities."""
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(_log_softmax(logits)[np.arange(len(labels)), labels]))


def _bce_with_logits(logits: np.ndarray, targets: np.ndarray) -> float:
    return float(-np.mean(targets * _log_sigmoid(logits) + (1.0 - targets) * _log_sigmoid(-logits)))


def _mean_squared_error(loss: str, a_name: str, a: ArrayLike, b_name: str, b: ArrayLike) -> float:
    a, b = _f64(a), _f64(b)
    check_same_shape(loss, a_name, a, b_name, b)
    return float(np.mean((a - b) ** 2))


def _tempered_kl(
    loss: str, names: tuple[str, str], layout: tuple[str, ...], s: ArrayLike, t: ArrayLike, T: float
) -> float:
    s, t = _f64(s), _f64(t)
    check_same_shape(loss, names[0], s, names[1], t, layout)
    check_temperature(loss, T)
    return T**2 * _batch_kl(_log_softmax(t / T), _log_softmax(s / T))


# --- the catalogue ----------------------------------------------------------------------------


def kd(student_logits: ArrayLike, teacher_logits: ArrayLike, temperature: float = 1.0) -> float:
    """Knowledge distillation: T² · KL(p^T(t) ‖ p^T(s)), batchmean (Hinton et al. 2015).

    ``T²`` keeps the gradient scale independent of the temperature.

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes).
      temperature: T > 0.

    Returns:
      The KL divergence summed over classes and averaged over the batch, times T².
    """
    return _tempered_kl(
        "kd", ("student_logits", "teacher_logits"), ("batch", "classes"), student_logits, teacher_logits, temperature
    )


def soft_ce(student_logits: ArrayLike, teacher_probs: ArrayLike, temperature: float = 1.0) -> float:
    """Soft-target cross-entropy: −T² · Σ_c q_c · log p^T(s)_c, batchmean (Hinton et al. 2015).

    For teachers that give probabilities only (black boxes). Equals ``kd`` plus T² · H(q), so its
    gradient in the student logits is the same as kd's when q = p^T(t).

    Args:
      student_logits: (batch, classes).
      teacher_probs: (batch, classes), non-negative rows that sum to 1 (not re-normalised).
      temperature: T > 0, applied to the student logits only.

    Returns:
      The cross-entropy summed over classes and averaged over the batch, times T².
    """
    s, q = _f64(student_logits), _f64(teacher_probs)
    check_same_shape("soft_ce", "student_logits", s, "teacher_probs", q, ("batch", "classes"))
    check_temperature("soft_ce", temperature)
    return temperature**2 * float(np.mean(-np.sum(q * _log_softmax(s / temperature), axis=-1)))


def binary_kd(student_logits: ArrayLike, teacher_logits: ArrayLike, temperature: float = 1.0) -> float:
    """Binary distillation: T² · mean BCE(σ(t/T), σ(s/T)) for one-logit binary heads.

    BCE(q, p) = −q·log p − (1 − q)·log(1 − p), computed as −q·logσ(s/T) − (1 − q)·logσ(−s/T). It is
    the cross-entropy form (``soft_ce`` on the two-class logits [0, s] with q = σ(t/T)), so its
    minimum is T² · H(σ(t/T)), not 0; ``kd`` on [0, s], [0, t] is the same minus that entropy.

    Args:
      student_logits: (batch,) or (batch, 1).
      teacher_logits: (batch,) or (batch, 1).
      temperature: T > 0.

    Returns:
      The BCE averaged over the batch, times T².
    """
    s, t = _f64(student_logits), _f64(teacher_logits)
    check_binary("binary_kd", "student_logits", s, "teacher_logits", t)
    check_temperature("binary_kd", temperature)
    targets = np.exp(_log_sigmoid(t.reshape(-1) / temperature))
    return temperature**2 * _bce_with_logits(s.reshape(-1) / temperature, targets)


def mse(student_outputs: ArrayLike, teacher_outputs: ArrayLike) -> float:
    """Output matching: mean (s − t)² over all elements (Ba & Caruana 2014).

    For regression outputs and ranking scores; no temperature.

    Args:
      student_outputs: any shape.
      teacher_outputs: the same shape.

    Returns:
      The squared difference averaged over every element.
    """
    return _mean_squared_error("mse", "student_outputs", student_outputs, "teacher_outputs", teacher_outputs)


def listwise(student_scores: ArrayLike, teacher_scores: ArrayLike, temperature: float = 1.0) -> float:
    """Listwise ranking distillation: T² · KL(softmax(t/T) ‖ softmax(s/T)) over each query's list.

    The same math as ``kd`` with candidates in place of classes (ListNet-style top-one
    probabilities, Cao et al. 2007).

    Args:
      student_scores: (queries, candidates).
      teacher_scores: (queries, candidates).
      temperature: T > 0.

    Returns:
      The KL divergence summed over candidates and averaged over queries, times T².
    """
    return _tempered_kl(
        "listwise",
        ("student_scores", "teacher_scores"),
        ("queries", "candidates"),
        student_scores,
        teacher_scores,
        temperature,
    )


def hint(student_features_adapted: ArrayLike, teacher_features: ArrayLike) -> float:
    """Hint loss: mean (A(f_s) − f_t)² over all elements (FitNets, Romero et al. 2015).

    The adapter A (linear or 1×1 convolution, owned by the distiller) is applied by the caller.

    Args:
      student_features_adapted: A(f_s), any shape.
      teacher_features: f_t, the same shape.

    Returns:
      The squared difference averaged over every element.
    """
    return _mean_squared_error(
        "hint", "student_features_adapted", student_features_adapted, "teacher_features", teacher_features
    )


def _unit(x: np.ndarray) -> np.ndarray:
    """x / max(‖x‖₂, NORMALIZE_EPS) over the last axis."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), NORMALIZE_EPS)


def _attention_map(features: np.ndarray) -> np.ndarray:
    return _unit(np.mean(features**2, axis=1).reshape(len(features), -1))


def attention(student_features: ArrayLike, teacher_features: ArrayLike) -> float:
    """Attention transfer: mean (a(f_s) − a(f_t))² (Zagoruyko & Komodakis 2017).

    a(f) = mean_c f_c², flattened to (batch, −1) and divided by max(‖·‖₂, 1e-12) per example.
    Invariant to positive scaling of either feature map.

    Args:
      student_features: (batch, channels_s, ...), rank ≥ 2.
      teacher_features: (batch, channels_t, ...), the same batch and spatial sizes.

    Returns:
      The squared difference of the normalised maps averaged over every element.
    """
    fs, ft = _f64(student_features), _f64(teacher_features)
    check_features("attention", "student_features", fs, "teacher_features", ft)
    return float(np.mean((_attention_map(fs) - _attention_map(ft)) ** 2))


def _non_target(z: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return z[~gt].reshape(len(z), -1)


def _target_split(z: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """log [p_gt, 1 − p_gt] of softmax(z), both computed in log space."""
    lse = _logsumexp(z)
    return np.stack([z[gt] - lse, _logsumexp(_non_target(z, gt)) - lse], axis=-1)


def dkd(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    labels: ArrayLike,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> float:
    """Decoupled KD: α · TCKD + β · NCKD (Zhao et al. 2022, the mdistiller formula).

    TCKD = T² · KL(b^T(t) ‖ b^T(s)) with b = [p_gt, 1 − p_gt], the target-vs-rest split of p^T.
    NCKD = T² · KL(p̂^T(t) ‖ p̂^T(s)), p̂ = softmax over the non-target logits only.
    Each KL is summed over its classes and averaged over the batch.

    Args:
      student_logits: (batch, classes), classes ≥ 2.
      teacher_logits: (batch, classes).
      labels: (batch,) integer true classes in [0, classes).
      alpha: weight of TCKD.
      beta: weight of NCKD.
      temperature: T > 0.

    Returns:
      α · TCKD + β · NCKD.
    """
    s, t, labels = _f64(student_logits), _f64(teacher_logits), np.asarray(labels)
    check_same_shape("dkd", "student_logits", s, "teacher_logits", t, ("batch", "classes"))
    check_labels("dkd", "student_logits", s, "labels", labels)
    check_temperature("dkd", temperature)
    _check_label_values("dkd", labels, s.shape[1])
    s, t = s / temperature, t / temperature
    gt = np.eye(s.shape[1], dtype=bool)[labels]
    tckd = _batch_kl(_target_split(t, gt), _target_split(s, gt))
    nckd = _batch_kl(_log_softmax(_non_target(t, gt)), _log_softmax(_non_target(s, gt)))
    return temperature**2 * (alpha * tckd + beta * nckd)


def _mean_pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of Pearson(a_i, b_i) = cosine of the centred rows, eps in the denominator."""
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.sum(a * b, axis=1) / (norms + PEARSON_EPS)))


def dist(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> float:
    """DIST: T² · (β · inter + γ · intra) (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher").

    With p = p^T: inter = 1 − mean over examples of Pearson(p_s[i, :], p_t[i, :]);
    intra = 1 − mean over classes of Pearson(p_s[:, c], p_t[:, c]). Pearson(a, b) =
    (ā · b̄) / (‖ā‖ ‖b̄‖ + 1e-8) with ā = a − mean(a), as in the official code.

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes).
      beta: weight of the inter-class term.
      gamma: weight of the intra-class term.
      temperature: T > 0.

    Returns:
      T² · (β · inter + γ · intra).
    """
    s, t = _f64(student_logits), _f64(teacher_logits)
    check_same_shape("dist", "student_logits", s, "teacher_logits", t, ("batch", "classes"))
    check_temperature("dist", temperature)
    p_s, p_t = np.exp(_log_softmax(s / temperature)), np.exp(_log_softmax(t / temperature))
    inter, intra = 1.0 - _mean_pearson(p_s, p_t), 1.0 - _mean_pearson(p_s.T, p_t.T)
    return temperature**2 * (beta * inter + gamma * intra)


def hard(student_logits: ArrayLike, teacher_logits: ArrayLike) -> float:
    """Hard-label distillation: CE(s, argmax t), batchmean (DeiT, Touvron et al. 2021).

    Ties in the teacher's argmax go to the first maximal class.

    Args:
      student_logits: (batch, classes).
      teacher_logits: (batch, classes).

    Returns:
      The cross-entropy averaged over the batch.
    """
    s, t = _f64(student_logits), _f64(teacher_logits)
    check_same_shape("hard", "student_logits", s, "teacher_logits", t, ("batch", "classes"))
    return _cross_entropy(s, np.argmax(t, axis=1))


# --- transformer losses: per token, masked over padding ------------------------------------------


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − cos(a, b) over the last axis, each side divided by max(‖·‖₂, NORMALIZE_EPS)."""
    return 1.0 - np.sum(_unit(a) * _unit(b), axis=-1)


def _token_mean(per_token: np.ndarray, mask: np.ndarray) -> float:
    """The mean of ``per_token`` (batch, tokens) over the real tokens (mask ≠ 0) of the whole batch,
    all pooled; NaN when there is none (as ``kd``'s batchmean of no rows)."""
    real = mask != 0
    count = np.count_nonzero(real)
    return float(np.sum(per_token[real]) / count) if count else math.nan


def _hidden_pair(loss: str, s: ArrayLike, t: ArrayLike, mask: ArrayLike, student_name: str) -> tuple[np.ndarray, ...]:
    s, t, mask = _f64(s), _f64(t), np.asarray(mask)
    check_tokens(loss, student_name, s, "teacher_hidden", t, mask, ("batch", "tokens", "hidden"))
    return s, t, mask


def hidden_cosine(student_hidden: ArrayLike, teacher_hidden: ArrayLike, mask: ArrayLike) -> float:
    """Hidden-state cosine loss: mean over real tokens of 1 − cos(h_s, h_t) (DistilBERT, Sanh et al. 2019).

    cos(a, b) = a/max(‖a‖, 1e-12) · b/max(‖b‖, 1e-12) (:data:`NORMALIZE_EPS`); the mean pools every
    real token of the batch (not a mean of per-sequence means). Applied per mapped layer pair.

    Args:
      student_hidden: h_s, (batch, tokens, hidden).
      teacher_hidden: h_t, the same shape.
      mask: (batch, tokens), nonzero for real tokens and 0 for padding (a tokenizer's attention mask).

    Returns:
      The cosine distance averaged over the real tokens; NaN if the mask has none.
    """
    s, t, mask = _hidden_pair("hidden_cosine", student_hidden, teacher_hidden, mask, "student_hidden")
    return _token_mean(_cosine_distance(s, t), mask)


def hidden_mse(student_hidden_projected: ArrayLike, teacher_hidden: ArrayLike, mask: ArrayLike) -> float:
    """Hidden-state MSE: mean over real tokens of ‖W h_s − h_t‖² (TinyBERT, Jiao et al. 2020).

    The squared norm is summed over the hidden axis; the mean pools every real token of the batch.
    The projection W (student width → teacher width, learned, owned by the distiller like ``hint``'s
    adapters) is applied by the caller. Applied per mapped layer pair.

    Args:
      student_hidden_projected: W h_s, (batch, tokens, hidden_teacher).
      teacher_hidden: h_t, the same shape.
      mask: (batch, tokens), nonzero for real tokens and 0 for padding.

    Returns:
      The squared distance summed over the hidden axis, averaged over the real tokens; NaN if none.
    """
    s, t, mask = _hidden_pair("hidden_mse", student_hidden_projected, teacher_hidden, mask,
                              "student_hidden_projected")
    return _token_mean(np.sum((s - t) ** 2, axis=-1), mask)


def attention_kl(student_attention: ArrayLike, teacher_attention: ArrayLike, mask: ArrayLike) -> float:
    """Self-attention distribution transfer: KL(A_t ‖ A_s) over keys, averaged over heads and real
    queries (MiniLM, Wang et al. 2020; there on the last layer).

    For each head h and query i: Σ_k p_k · (log p_k − log max(q_k, 1e-12)), p = A_t[h, i, :],
    q = A_s[h, i, :]. A teacher probability of 0 contributes 0 (0 · log 0 = 0, so padded keys, which
    hold 0, drop out); a student probability below :data:`PROBABILITY_FLOOR` is read as the floor, so
    a student 0 under a teacher p > 0 costs p · (log p + 27.6), finite. Rows are used as given (not
    re-normalised). The mean over queries pools every real token of the batch; heads count equally.

    Args:
      student_attention: A_s, (batch, heads, tokens, tokens) probabilities, each row over the keys.
      teacher_attention: A_t, the same shape (same head count).
      mask: (batch, tokens), nonzero for real tokens and 0 for padding; selects the queries.

    Returns:
      The KL divergence summed over keys, averaged over heads and real queries; NaN if no real token.
    """
    q, p, mask = _f64(student_attention), _f64(teacher_attention), np.asarray(mask)
    check_tokens("attention_kl", "student_attention", q, "teacher_attention", p, mask,
                 ("batch", "heads", "tokens", "tokens"))
    p_log_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    kl = np.sum(p_log_p - p * np.log(np.maximum(q, PROBABILITY_FLOOR)), axis=-1)  # (batch, heads, tokens)
    return _token_mean(np.mean(kl, axis=1), mask)


def embedding(student_embedding: ArrayLike, teacher_embedding: ArrayLike, metric: str = "mse") -> float:
    """Embedding distillation: the student's pooled sentence embedding regresses the teacher's, no
    labels (Reimers & Gurevych 2020, "Making Monolingual Sentence Embeddings Multilingual using
    Knowledge Distillation"; how sentence-transformers shrinks a model).

    metric "mse": mean over rows of ‖e_s − e_t‖² (summed over the embedding); "cosine": mean over
    rows of 1 − cos(e_s, e_t), each side divided by max(‖·‖, 1e-12) (:data:`NORMALIZE_EPS`).

    Args:
      student_embedding: e_s, (batch, dim).
      teacher_embedding: e_t, the same shape.
      metric: "mse" or "cosine".

    Returns:
      The distance averaged over the batch (NaN for no rows, as ``kd``).
    """
    s, t = _f64(student_embedding), _f64(teacher_embedding)
    check_same_shape("embedding", "student_embedding", s, "teacher_embedding", t, ("batch", "dim"))
    check_metric("embedding", metric)
    return float(np.mean(np.sum((s - t) ** 2, axis=-1) if metric == "mse" else _cosine_distance(s, t)))


def task(outputs: ArrayLike, targets: ArrayLike, task: str) -> float:
    """The supervised loss on true targets, by task.

    - "classification": CE(s, y), outputs (batch, classes), targets (batch,) integer classes; batchmean.
    - "binary": BCE with logits, outputs and targets (batch,) or (batch, 1), targets in [0, 1]; mean.
    - "regression": mean (s − y)² over all elements, outputs and targets of the same shape.
    - "ranking": ListNet (Cao et al. 2007): q = y / Σy per query, −Σ q · log softmax(s), averaged
      over the queries with Σy > 0 (queries without relevant items are left out; 0 if none has one).
      outputs and targets (queries, candidates), targets non-negative relevance.

    Returns:
      The loss as a float.
    """
    if task == "classification":
        s, y = _f64(outputs), np.asarray(targets)
        check_labels("task", "outputs", s, "targets", y)
        _check_label_values("task", y, s.shape[1])
        return _cross_entropy(s, y)
    if task == "binary":
        s, y = _f64(outputs), _f64(targets)
        check_binary("task", "outputs", s, "targets", y)
        return _bce_with_logits(s.reshape(-1), y.reshape(-1))
    if task == "regression":
        return _mean_squared_error("task", "outputs", outputs, "targets", targets)
    if task == "ranking":
        s, y = _f64(outputs), _f64(targets)
        check_same_shape("task", "outputs", s, "targets", y, ("queries", "candidates"))
        total = y.sum(axis=1, keepdims=True)
        q = y / np.where(total > 0, total, 1.0)
        return float(-np.sum(q * _log_softmax(s)) / max(np.count_nonzero(total), 1))
    raise ValueError(f"task: unknown task {task!r}; expected one of {', '.join(LOSSES_BY_TASK)}")
