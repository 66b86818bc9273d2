"""How good a model's embeddings are for the task, read without its head: a linear probe and
nearest-neighbour accuracy (the evaluation of sentence-embedding distillation, where the student
learns the teacher's embeddings and never sees a label).

Both fit on the labeled training split's embeddings and score the test split's:

- ``probe_accuracy``: multinomial logistic regression (L2, C = 1, lbfgs) on embeddings
  standardized with the training split's mean and deviation — what a linear head trained on the
  frozen encoder reaches (Alain & Bengio 2016, "Understanding intermediate layers using linear
  classifier probes").
- ``knn_accuracy``: the majority label of the ``k`` training embeddings nearest by cosine
  similarity (a tie goes to the smallest class index, as scikit-learn breaks it).
"""

from __future__ import annotations

import numpy as np

EMBEDDING_METRICS = ("probe_accuracy", "knn_accuracy")


def embedding_metrics(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                      neighbours: int) -> dict[str, float]:
    """``{"probe_accuracy": …, "knn_accuracy": …}`` of embeddings ``train`` (N, D) labeled
    ``train_labels`` (N,) on ``test`` (M, D) with ``test_labels`` (M,)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train, train_labels)
    knn = KNeighborsClassifier(n_neighbors=min(neighbours, len(train)), metric="cosine")
    knn.fit(train, train_labels)
    return {"probe_accuracy": float(np.mean(probe.predict(test) == test_labels)),
            "knn_accuracy": float(np.mean(knn.predict(test) == test_labels))}
