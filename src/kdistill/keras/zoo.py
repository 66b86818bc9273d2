"""Built-in Keras models: MLP, small CNN, text MLP and a small ViT (:mod:`kdistill.keras.vit`)
with the keyword arguments and layer names of ``kdistill.torch.zoo`` (``fc1``, ``conv2``,
``pool``, ``head``), so one recipe serves both backends and feature-distillation paths read the
same. Sequential or Functional models with an ``Input``: every layer's output can be tapped by
name. The text MLP's and the ViT's own layers are registered Keras serializables, so their
``.keras`` files load in safe mode."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from kdistill.errors import KdistillError
from kdistill.keras.vit import vit
from kdistill.zoo_inputs import check_token_inputs


def dense_layers(output_dim: int, hidden: Sequence[int], dropout: float) -> list[layers.Layer]:
    """[fcK → reluK → dropK]… → head."""
    stack: list[layers.Layer] = []
    for index, size in enumerate(hidden, start=1):
        stack += [layers.Dense(size, name=f"fc{index}"), layers.ReLU(name=f"relu{index}")]
        if dropout:
            stack.append(layers.Dropout(dropout, name=f"drop{index}"))
    stack.append(layers.Dense(output_dim, name="head"))
    return stack


def mlp(input_shape: Sequence[int], output_dim: int, hidden: Sequence[int] = (128,), dropout: float = 0.0,
        input_dropout: float = 0.0) -> keras.Model:
    """Flatten → [fcK → reluK → dropK]… → head. ``mlp(hidden=[1200, 1200], dropout=0.5,
    input_dropout=0.2)`` is Hinton et al. 2015's MNIST teacher."""
    stack: list[layers.Layer] = [keras.Input(tuple(input_shape)), layers.Flatten(name="flatten")]
    if input_dropout:
        stack.append(layers.Dropout(input_dropout, name="drop0"))
    return keras.Sequential(stack + dense_layers(output_dim, hidden, dropout), name="mlp")


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


@keras.saving.register_keras_serializable(package="kdistill")
class TokenEmbedding(layers.Embedding):
    """The embedding of the ids ``tokens[:, 0]`` of (B, 2, L) tokens: (B, L, D)."""

    def call(self, tokens):
        return super().call(tokens[:, 0])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2], self.output_dim)


@keras.saving.register_keras_serializable(package="kdistill")
class MaskedMeanPool(layers.Layer):
    """(B, L, D) token vectors and (B, 2, L) tokens → (B, D): the mean over the real tokens
    (attention mask ``tokens[:, 1]`` = 1). Padding is left out exactly (its vectors are multiplied
    by 0); a sequence without a real token gives zeros."""

    def call(self, vectors, tokens):
        mask = ops.expand_dims(ops.cast(tokens[:, 1], vectors.dtype), -1)
        return ops.sum(vectors * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def compute_output_shape(self, vectors_shape, tokens_shape):
        return (vectors_shape[0], vectors_shape[2])


def text_mlp(input_shape: Sequence[int], output_dim: int, vocab_size: int | None = None, embedding: int = 64,
             hidden: Sequence[int] = (128,), dropout: float = 0.0, input_dtype: str = "int32") -> keras.Model:
    """Tokens (2, L) int → ``embedding`` of the ids (N(0, 1) as PyTorch's) → ``pool`` (masked mean,
    (B, D)) → [fcK → reluK → dropK]… → ``head``; ``vocab_size`` comes from the data's meta (the
    tokenizer's vocabulary). A Functional model whose ``Input`` keeps the data's integer dtype and
    takes any length L, as the PyTorch and JAX models do."""
    check_token_inputs("text_mlp", input_shape, input_dtype, vocab_size)
    tokens = keras.Input((2, None), dtype=input_dtype, name="tokens")
    vectors = TokenEmbedding(vocab_size, embedding, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
                             name="embedding")(tokens)
    x = MaskedMeanPool(name="pool")(vectors, tokens)
    for layer in dense_layers(output_dim, hidden, dropout):
        x = layer(x)
    return keras.Model(tokens, x, name="text_mlp")


ZOO = {"mlp": mlp, "cnn": cnn, "text_mlp": text_mlp, "vit": vit}
