"""Task metrics on numpy model outputs at T = 1: accuracy, ROC-AUC, RMSE, NDCG@10, and
teacher–student agreement. One place, used by every backend's evaluation and by the report."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

PRIMARY = {"classification": "accuracy", "binary": "roc_auc", "regression": "rmse", "ranking": "ndcg@10"}
HIGHER_IS_BETTER = {"accuracy": True, "roc_auc": True, "rmse": False, "ndcg@10": True,
                    "probe_accuracy": True, "knn_accuracy": True}  # the last two: kdistill.report.embeddings


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve as the Mann–Whitney U statistic (ties count one half)."""
    scores, labels = np.ravel(scores), np.ravel(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        raise ValueError("ROC-AUC needs both classes among the labels")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def rmse(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.reshape(outputs, targets.shape) - targets) ** 2)))


def ndcg_at_k(scores: np.ndarray, relevance: np.ndarray, k: int = 10) -> float:
    """Mean over lists with any relevant item of DCG@k / ideal DCG@k, gain 2^rel − 1, discount log2(rank + 1)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ideal = -np.sort(-relevance, axis=1)[:, :k]
    discount = 1.0 / np.log2(np.arange(2, order.shape[1] + 2))
    dcg = ((2.0 ** np.take_along_axis(relevance, order, axis=1) - 1) * discount).sum(axis=1)
    idcg = ((2.0 ** ideal - 1) * discount).sum(axis=1)
    kept = idcg > 0
    return float(np.mean(dcg[kept] / idcg[kept]))


def task_metrics(task: str, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The task's metrics; the first key is the primary one (see ``PRIMARY``)."""
    if task == "classification":
        return {"accuracy": accuracy(outputs, targets)}
    if task == "binary":
        scores = np.reshape(outputs, len(targets))
        return {"roc_auc": roc_auc(scores, targets), "accuracy": float(np.mean((scores > 0) == (targets > 0.5)))}
    if task == "regression":
        return {"rmse": rmse(outputs, targets)}
    if task == "ranking":
        return {"ndcg@10": ndcg_at_k(outputs, targets)}
    raise ValueError(f"unknown task {task!r}")


def agreement(task: str, student_outputs: np.ndarray, teacher_outputs: np.ndarray) -> float | None:
    """Share of samples where student and teacher make the same top-1 decision (the same class,
    the same side of the binary threshold, the same top item of a list); None for regression."""
    if task == "regression":
        return None
    if task == "binary":
        return float(np.mean((np.ravel(student_outputs) > 0) == (np.ravel(teacher_outputs) > 0)))
    return float(np.mean(np.argmax(student_outputs, axis=1) == np.argmax(teacher_outputs, axis=1)))
