"""Built-in Flax NNX models: MLP, small CNN, user–item scorer, text MLP, with the PyTorch zoo's
keyword arguments and layer names (``fc1``, ``relu1``, ``conv2``, ``pool``, ``head``), so one
recipe serves both.

Layers are initialised as PyTorch does (weights and biases uniform in ±1/√fan_in, embeddings
N(0, 1)), so the two
backends start from the same distribution. Images arrive channels-first (C, H, W) as in every
kdistill dataset; the CNN transposes to NHWC for ``nnx.Conv``. :class:`Layers` runs named layers in
order and can return the activations of some of them: that is how feature distillation reads
zoo models without hooks (NNX has none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from kdistill.errors import KdistillError
from kdistill.zoo_inputs import check_token_inputs


def _torch_init(fan_in: int) -> dict[str, Callable]:
    """PyTorch's default for Linear and Conv: kernel and bias uniform in ±1/√fan_in."""
    bound = 1.0 / math.sqrt(fan_in)
    return {"kernel_init": nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
            "bias_init": lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)}


def linear(width: int, size: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(width, size, rngs=rngs, **_torch_init(width))


def flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def channels_last(x: jax.Array) -> jax.Array:
    return jnp.moveaxis(x, 1, -1)


def channels_first(x: jax.Array) -> jax.Array:
    """(B, H, W, C) → (B, C, H, W): features are reported in the layout the losses expect."""
    return jnp.moveaxis(x, -1, 1) if x.ndim == 4 else x


class Layers(nnx.Module):
    """Named layers applied in order; ``run(x, taps)`` also returns the outputs of the layers named
    in ``taps`` (4-d activations channels-first). A layer whose ``reads_inputs`` is true (the text
    MLP's masked pool) is called with the model's inputs too: ``layer(x, inputs)``."""

    def __init__(self, layers: dict[str, Callable[[jax.Array], jax.Array]]):
        self.names = tuple(layers)
        for name, layer in layers.items():
            setattr(self, name, layer)

    def run(self, x: jax.Array, taps: Sequence[str] = ()) -> tuple[jax.Array, dict[str, jax.Array]]:
        inputs, features = x, {}
        for name in self.names:
            layer = getattr(self, name)
            x = layer(x, inputs) if getattr(layer, "reads_inputs", False) else layer(x)
            if name in taps:
                features[name] = channels_first(x)
        return x, features

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.run(x)[0]


def dense_layers(width: int, output_dim: int, hidden: Sequence[int], dropout: float,
                 rngs: nnx.Rngs) -> dict[str, Callable]:
    """[fcK → reluK → dropK]… → head, from ``width`` inputs."""
    layers: dict[str, Callable] = {}
    for index, size in enumerate(hidden, start=1):
        layers[f"fc{index}"] = linear(width, size, rngs)
        layers[f"relu{index}"] = jax.nn.relu
        if dropout:
            layers[f"drop{index}"] = nnx.Dropout(dropout, rngs=rngs)
        width = size
    layers["head"] = linear(width, output_dim, rngs)
    return layers


def mlp(input_shape: Sequence[int], output_dim: int, hidden: Sequence[int] = (128,), dropout: float = 0.0,
        input_dropout: float = 0.0, seed: int = 0) -> Layers:
    """Flatten → [fcK → reluK → dropK]… → head. ``mlp(hidden=[1200, 1200], dropout=0.5,
    input_dropout=0.2)`` is Hinton et al. 2015's MNIST teacher. ``seed`` seeds weights and dropout."""
    rngs = nnx.Rngs(seed)
    layers: dict[str, Callable] = {"flatten": flatten}
    if input_dropout:
        layers["drop0"] = nnx.Dropout(input_dropout, rngs=rngs)
    return Layers(layers | dense_layers(math.prod(input_shape), output_dim, hidden, dropout, rngs))


def cnn(input_shape: Sequence[int], output_dim: int, channels: Sequence[int] = (32, 64), hidden: int = 128,
        dropout: float = 0.0, seed: int = 0) -> Layers:
    """[convK (3×3) → reluK → poolK (2×2)]… → flatten → fc → relu → head (LeNet-style).
    Input (C, H, W); with ``dropout`` a dropout layer follows every block, as in seed 003's teacher."""
    if len(input_shape) != 3:
        raise KdistillError(f"student/teacher model 'cnn' needs image inputs (C, H, W), the data gives {tuple(input_shape)}")
    rngs = nnx.Rngs(seed)
    in_channels, height, width = input_shape
    layers: dict[str, Callable] = {"nhwc": channels_last}
    for index, size in enumerate(channels, start=1):
        layers[f"conv{index}"] = nnx.Conv(in_channels, size, kernel_size=(3, 3), padding=1, rngs=rngs,
                                          **_torch_init(in_channels * 9))
        layers[f"relu{index}"] = jax.nn.relu
        layers[f"pool{index}"] = partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2))
        if dropout:
            layers[f"drop{index}"] = nnx.Dropout(dropout, rngs=rngs)
        in_channels, height, width = size, height // 2, width // 2
    layers["flatten"] = flatten
    layers["fc"] = linear(in_channels * height * width, hidden, rngs)
    layers["relu"] = jax.nn.relu
    if dropout:
        layers["drop"] = nnx.Dropout(dropout, rngs=rngs)
    layers["head"] = linear(hidden, output_dim, rngs)
    return Layers(layers)


class UserItemScorer(nnx.Module):
    """Scores each (user, candidate item) pair of a list: x (B, 1 + L) int → scores (B, L).

    score = ⟨u, v⟩ + MLP([u; v]): a matrix-factorisation dot product plus seed 000's MLP on the
    concatenated embeddings; ``hidden=()`` makes that MLP a single linear layer (seed 000's student)."""

    def __init__(self, n_users: int, n_items: int, embedding: int = 32, hidden: Sequence[int] = (64,), seed: int = 0):
        rngs = nnx.Rngs(seed)
        init = nnx.initializers.normal(0.5 * embedding**-0.25)  # ⟨u, v⟩ starts with variance 1/16
        self.user_embedding = nnx.Embed(n_users, embedding, embedding_init=init, rngs=rngs)
        self.item_embedding = nnx.Embed(n_items, embedding, embedding_init=init, rngs=rngs)
        self.scorer = mlp((2 * embedding,), 1, hidden, seed=seed + 1)

    def __call__(self, x: jax.Array) -> jax.Array:
        users, items = x[:, 0], x[:, 1:]
        item_vectors = self.item_embedding(items)
        user_vectors = jnp.broadcast_to(self.user_embedding(users)[:, None, :], item_vectors.shape)
        pairs = jnp.concatenate([user_vectors, item_vectors], axis=-1)
        mlp_scores = self.scorer(pairs.reshape(-1, pairs.shape[-1])).reshape(items.shape)
        return (user_vectors * item_vectors).sum(axis=-1) + mlp_scores


def user_item(input_shape: Sequence[int], output_dim: int, n_users: int, n_items: int, embedding: int = 32,
              hidden: Sequence[int] = (64,), seed: int = 0) -> UserItemScorer:
    if input_shape[0] != output_dim + 1:
        raise KdistillError(f"model 'user_item' needs inputs (1 + L,) = (user, items…); got {tuple(input_shape)} for L={output_dim}")
    return UserItemScorer(n_users, n_items, embedding, hidden, seed)


class TokenEmbedding(nnx.Embed):
    """The embedding of the ids ``tokens[:, 0]`` of (B, 2, L) tokens: (B, L, D)."""

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return super().__call__(tokens[:, 0])


class MaskedMeanPool(nnx.Module):
    """(B, L, D) token vectors and the model's (B, 2, L) tokens → (B, D): the mean over the real
    tokens (attention mask ``tokens[:, 1]`` = 1). Padding is left out exactly (its vectors are
    multiplied by 0); a sequence without a real token gives zeros."""

    reads_inputs = True

    def __call__(self, vectors: jax.Array, tokens: jax.Array) -> jax.Array:
        mask = tokens[:, 1, :, None].astype(vectors.dtype)
        return (vectors * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)


def text_mlp(input_shape: Sequence[int], output_dim: int, vocab_size: int | None = None, embedding: int = 64,
             hidden: Sequence[int] = (128,), dropout: float = 0.0, input_dtype: str = "int32", seed: int = 0) -> Layers:
    """Tokens (2, L) int → ``embedding`` of the ids → ``pool`` (masked mean, (B, D)) →
    [fcK → reluK → dropK]… → ``head``; ``vocab_size`` comes from the data's meta (the tokenizer's
    vocabulary). ``seed`` seeds weights and dropout."""
    check_token_inputs("text_mlp", input_shape, input_dtype, vocab_size)
    rngs = nnx.Rngs(seed)
    layers: dict[str, Callable] = {
        "embedding": TokenEmbedding(vocab_size, embedding, embedding_init=nnx.initializers.normal(1.0), rngs=rngs),
        "pool": MaskedMeanPool(),
    }
    return Layers(layers | dense_layers(embedding, output_dim, hidden, dropout, rngs))


ZOO = {"mlp": mlp, "cnn": cnn, "user_item": user_item, "text_mlp": text_mlp}
