"""Embeddings scored without a head: the linear probe and nearest-neighbour accuracy of the
report (compare.embedding), and the recipe fields that ask for them."""

from __future__ import annotations

import numpy as np
import pytest

from kdistill.recipe import load_recipe
from kdistill.report.embeddings import embedding_metrics


def clusters(rows_per_class: int, seed: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Three classes around far-apart centres in 16 dimensions."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), rows_per_class)
    centres = np.eye(3, 16) * 10
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), 16)), labels


def test_separated_classes_score_one_and_unrelated_labels_score_chance():
    train, train_labels = clusters(40, 0, 1.0)
    test, test_labels = clusters(40, 1, 1.0)
    assert embedding_metrics(train, train_labels, test, test_labels, 5) == {"probe_accuracy": 1.0, "knn_accuracy": 1.0}
    rng = np.random.default_rng(2)
    noise, noise_test = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    scores = embedding_metrics(noise, rng.integers(0, 3, 600), noise_test, rng.integers(0, 3, 600), 5)
    assert all(0.25 < value < 0.42 for value in scores.values())  # 1/3 ± sampling noise


def test_nearest_neighbours_vote_by_cosine_and_k():
    train = np.array([[1.0, 0.0], [10.0, 0.1], [0.0, 1.0]])  # the first two point one way, whatever their length
    labels = np.array([0, 0, 1])
    test = np.array([[0.1, 0.0], [0.0, 5.0]])
    assert embedding_metrics(train, labels, test, np.array([0, 1]), 1)["knn_accuracy"] == 1.0
    assert embedding_metrics(train, labels, test, np.array([0, 1]), 3)["knn_accuracy"] == 0.5  # all three vote: 0 wins


def test_the_verdict_reads_the_probe_when_embeddings_are_scored():
    assert load_recipe(None).verdict_metric == "accuracy"
    assert load_recipe(None, ["compare.embedding=fc1"]).verdict_metric == "probe_accuracy"
    with pytest.raises(Exception, match="compare.embedding: embeddings are scored by class accuracy.*'ranking'"):
        load_recipe("ranking", ["compare.embedding=fc1"])
