"""Specialists merged with a generalist into one distribution over all classes (Hinton, Vinyals &
Dean 2015, "Distilling the Knowledge in a Neural Network", §5).

A specialist m covers a subset S_m of the C classes: it is a (|S_m| + 1)-way classifier whose last
class, the *dustbin*, stands for every class outside S_m (train one with ``data.classes: S_m``).
For each sample, with the generalist's tempered distribution p^g = softmax(z^g / T) over all
classes and each specialist's p^m = softmax(z^m / T) over S_m ∪ {dustbin}, the merged
distribution is

    q = argmin_q  KL(p^g ‖ q) + Σ_{m ∈ A}  KL(p^m ‖ Π_m q)

where Π_m q keeps q_c for c ∈ S_m and puts Σ_{c ∉ S_m} q_c on the dustbin, and A, the *active*
specialists, are those whose S_m holds one of the generalist's ``top_n`` most probable classes
(Hinton's "active set"; a sample with no active specialist keeps q = p^g). q = softmax(z) is
found by L-BFGS on z, started at log p^g; with the cross-entropy form of each KL (the entropies
are constants) the gradient in z_c of one term with target distribution w over a partition of the
classes into groups G is  q_c − q_c · w_G(c) / Σ_{c' ∈ G(c)} q_{c'}.

The result is stored as T · log q, so a ``kd``/``soft_ce`` loss at the same T reads back q: cache
for the T you train at (as with ``mean_probs`` ensembles).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from kdistill.errors import KdistillError


def check_classes(classes: Sequence[int], num_classes: int, field: str) -> np.ndarray:
    """A specialist's classes as an int array: at least 2, distinct, in range, not all classes."""
    checked = np.asarray(classes, dtype=np.int64)
    if checked.ndim != 1 or len(checked) < 2 or len(set(checked.tolist())) != len(checked):
        raise KdistillError(f"{field}: {list(classes)} — a specialist needs at least 2 distinct classes")
    if checked.min() < 0 or checked.max() >= num_classes or len(checked) >= num_classes:
        raise KdistillError(f"{field}: {list(classes)} — classes must lie in 0..{num_classes - 1} and leave at "
                            f"least one class to the dustbin")
    return checked


def _objective(z_flat: np.ndarray, shape: tuple[int, int], generalist: np.ndarray,
               specialists: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray]:
    """Σ cross-entropies (value) and their gradient in z, for a chunk flattened to one vector."""
    z = z_flat.reshape(shape)
    log_q = log_softmax(z, axis=1)
    q = np.exp(log_q)
    value = -(generalist * log_q).sum()
    grad = q - generalist
    for classes, target, active in specialists:  # target: (B, |S| + 1), active: (B,) 0/1
        outside = np.ones(shape[1], dtype=bool)
        outside[classes] = False
        dustbin_mass = np.clip(q[:, outside].sum(axis=1), 1e-300, None)
        value -= (active[:, None] * target[:, :-1] * log_q[:, classes]).sum()
        value -= (active * target[:, -1] * np.log(dustbin_mass)).sum()
        term = q * active[:, None]
        term[:, classes] -= active[:, None] * target[:, :-1]
        term[:, outside] -= (active * target[:, -1] / dustbin_mass)[:, None] * q[:, outside]
        grad += term
    return float(value), grad.ravel()


def merge_specialists(generalist_logits: np.ndarray, specialist_logits: Sequence[np.ndarray],
                      subsets: Sequence[Sequence[int]], *, temperature: float = 1.0, top_n: int = 1) -> np.ndarray:
    """(B, C) float32 logits T · log q of the merged distribution (see the module docstring)."""
    batch, num_classes = generalist_logits.shape
    subsets = [check_classes(classes, num_classes, f"specialists[{index}]") for index, classes in enumerate(subsets)]
    if not 1 <= top_n <= num_classes:
        raise KdistillError(f"--top-n: {top_n} must be between 1 and the class count {num_classes}")
    generalist = softmax(generalist_logits.astype(np.float64) / temperature, axis=1)
    top = np.argsort(-generalist, axis=1, kind="stable")[:, :top_n]
    terms = []
    for index, (classes, logits) in enumerate(zip(subsets, specialist_logits)):
        if logits.shape != (batch, len(classes) + 1):
            raise KdistillError(f"specialists[{index}]: outputs {logits.shape[1:]} per sample, classes {classes.tolist()} "
                                f"plus the dustbin need ({len(classes) + 1},)")
        active = np.isin(top, classes).any(axis=1).astype(np.float64)
        terms.append((classes, softmax(logits.astype(np.float64) / temperature, axis=1), active))
    start = np.log(np.clip(generalist, 1e-300, None))
    solution = minimize(_objective, start.ravel(), args=((batch, num_classes), generalist, terms), jac=True,
                        method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-15})
    log_q = log_softmax(solution.x.reshape(batch, num_classes), axis=1)
    return (temperature * log_q).astype(np.float32)
