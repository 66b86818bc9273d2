"""Keras model factories for tests, referenced from recipes by import path ``keras_factories:NAME``
(``tests/conftest.py`` puts this directory on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from kdistill.keras.zoo import mlp


def extra_classes(input_shape: Sequence[int], output_dim: int, extra: int = 2) -> keras.Model:
    """An MLP that ignores the dataset's class count: ``output_dim + extra`` outputs."""
    return mlp(input_shape, output_dim + extra, hidden=(8,))


class TwoLayer(keras.Model):
    """A subclassed model: its layers have names but no symbolic outputs to tap."""

    def __init__(self, output_dim: int):
        super().__init__()
        self.fc1 = keras.layers.Dense(16, activation="relu", name="fc1")
        self.head = keras.layers.Dense(output_dim, name="head")

    def call(self, x):
        return self.head(self.fc1(x))


def subclassed(output_dim: int) -> keras.Model:
    return TwoLayer(output_dim)


class NanInTraining(keras.layers.Layer):
    """Identity at inference; NaN in training, so the first training step diverges."""

    def call(self, x, training=None):
        return x * float("nan") if training else x


def nan_in_training(input_shape: Sequence[int], output_dim: int) -> keras.Model:
    return keras.Sequential([keras.Input(tuple(input_shape)), keras.layers.Dense(output_dim, name="head"),
                             NanInTraining(name="nan")])
