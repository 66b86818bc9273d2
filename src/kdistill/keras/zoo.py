"""Built-in Keras models: MLP and small CNN with the keyword arguments and layer names of
``kdistill.torch.zoo`` (``fc1``, ``conv2``, ``head``), so one recipe serves both backends and
feature-distillation paths read the same. Sequential models with an ``Input``: every layer's
output can be tapped by name."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from kdistill.errors import KdistillError


def mlp(input_shape: Sequence[int], output_dim: int, hidden: Sequence[int] = (128,), dropout: float = 0.0,
        input_dropout: float = 0.0) -> keras.Model:
    """Flatten → [fcK → reluK → dropK]… → head. ``mlp(hidden=[1200, 1200], dropout=0.5,
    input_dropout=0.2)`` is Hinton et al. 2015's MNIST teacher."""
    stack: list[layers.Layer] = [keras.Input(tuple(input_shape)), layers.Flatten(name="flatten")]
    if input_dropout:
        stack.append(layers.Dropout(input_dropout, name="drop0"))
    for index, size in enumerate(hidden, start=1):
        stack += [layers.Dense(size, name=f"fc{index}"), layers.ReLU(name=f"relu{index}")]
        if dropout:
            stack.append(layers.Dropout(dropout, name=f"drop{index}"))
    stack.append(layers.Dense(output_dim, name="head"))
    return keras.Sequential(stack, name="mlp")


def cnn(input_shape: Sequence[int], output_dim: int, channels: Sequence[int] = (32, 64), hidden: int = 128,
        dropout: float = 0.0) -> keras.Model:
    """[convK (3×3) → reluK → poolK (2×2)]… → flatten → fc → relu → head (LeNet-style).

    Inputs are (C, H, W) as kdistill's data gives them; a ``channels_last`` Permute makes them
    (H, W, C) for Keras's convolutions, so tapped conv features are channels-last. With ``dropout``
    a dropout layer follows every block, as in seed 003's teacher."""
    if len(input_shape) != 3:
        raise KdistillError(f"student/teacher model 'cnn' needs image inputs (C, H, W), the data gives {tuple(input_shape)}")
    stack: list[layers.Layer] = [keras.Input(tuple(input_shape)), layers.Permute((2, 3, 1), name="channels_last")]
    for index, size in enumerate(channels, start=1):
        stack += [layers.Conv2D(size, 3, padding="same", name=f"conv{index}"), layers.ReLU(name=f"relu{index}"),
                  layers.MaxPooling2D(2, name=f"pool{index}")]
        if dropout:
            stack.append(layers.Dropout(dropout, name=f"drop{index}"))
    stack += [layers.Flatten(name="flatten"), layers.Dense(hidden, name="fc"), layers.ReLU(name="relu")]
    if dropout:
        stack.append(layers.Dropout(dropout, name="drop"))
    stack.append(layers.Dense(output_dim, name="head"))
    return keras.Sequential(stack, name="cnn")


ZOO = {"mlp": mlp, "cnn": cnn}
