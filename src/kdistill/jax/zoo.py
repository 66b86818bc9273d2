"""Built-in Flax NNX models: MLP, small CNN, user–item scorer, text MLP, small vision transformer,
with the PyTorch zoo's keyword arguments and layer names (``fc1``, ``relu1``, ``conv2``, ``pool``,
``block1``, ``head``), so one recipe serves both.

Layers are initialised as PyTorch does (weights and biases uniform in ±1/√fan_in, embeddings
N(0, 1)), so the two
backends start from the same distribution. Images arrive channels-first (C, H, W) as in every
kdistill dataset; the CNN transposes to NHWC for ``nnx.Conv``. :class:`Layers` runs named layers in
order and can return the activations of some of them: that is how feature distillation reads
zoo models without hooks (NNX has none); the ViT is a ``Layers`` with its own ``run``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from kdistill.errors import KdistillError
from kdistill.zoo_inputs import check_token_inputs, check_vit_inputs


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


class Block(nnx.Module):
    """Pre-norm transformer block on (B, T, D) tokens: x + attn(norm1(x)), then
    x + drop(fc2(drop(gelu(fc1(norm2(x)))))); ``dropout`` also drops attention weights, as in
    ``nn.MultiheadAttention(dropout=...)``. Attention is initialised as PyTorch's
    ``nn.MultiheadAttention`` (q, k, v kernels Xavier-uniform as one (D, 3D) matrix, output kernel
    as a Linear, biases 0), GELU is the exact (erf) one, as ``nn.GELU``'s default."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(heads, dim, dropout_rate=dropout, deterministic=False, decode=False,
                                           kernel_init=nnx.initializers.variance_scaling(0.5, "fan_avg", "uniform"),
                                           out_kernel_init=_torch_init(dim)["kernel_init"], rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
        self.fc1 = linear(dim, dim * mlp_ratio, rngs)
        self.fc2 = linear(dim * mlp_ratio, dim, rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs if dropout else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.drop(self.fc2(self.drop(jax.nn.gelu(self.fc1(self.norm2(x)), approximate=False))))


class VisionTransformer(Layers):
    """ViT (Dosovitskiy et al. 2021) with DeiT's optional distillation token (Touvron et al. 2021).

    (C, H, W) → ``patch_embed`` (patch×patch conv, stride patch) → N tokens, with [``cls_token``,
    ``dist_token``] prepended and ``pos_embed`` added → ``block1`` … ``blockD`` → ``norm`` →
    ``head`` on the class token (and ``dist_head`` on the distillation token).

    Output: without the token, the head's logits (B, K). With it, training mode
    (``deterministic=False``) returns [cls_logits, dist_logits] concatenated, (B, 2K), for the
    distiller to split (the class half learns the labels, the distillation half the teacher);
    evaluation mode (``deterministic=True``) returns (cls_logits + dist_logits) / 2, (B, K), DeiT's
    inference rule. ``nnx.view(model, deterministic=...)`` switches the mode, as it does Dropout's.

    A :class:`Layers` with its own ``run``: the names it can tap are ``patch_embed``
    ((B, D, H/p, W/p), channels-first), ``blockK`` and ``norm`` ((B, T, D)), ``head`` and
    ``dist_head`` (each head's logits, (B, K))."""

    def __init__(self, input_shape: Sequence[int], output_dim: int, patch: int, dim: int, depth: int, heads: int,
                 mlp_ratio: int, dropout: float, distillation_token: bool, rngs: nnx.Rngs):
        channels, height, width = input_shape
        token_init = nnx.initializers.truncated_normal(0.02)
        layers: dict[str, Callable] = {
            "patch_embed": nnx.Conv(channels, dim, kernel_size=(patch, patch), strides=patch, padding="VALID",
                                    rngs=rngs, **_torch_init(channels * patch * patch))}
        self.cls_token = nnx.Param(token_init(rngs.params(), (1, 1, dim)))
        if distillation_token:
            self.dist_token = nnx.Param(token_init(rngs.params(), (1, 1, dim)))
        tokens = (height // patch) * (width // patch) + 1 + int(distillation_token)
        self.pos_embed = nnx.Param(token_init(rngs.params(), (1, tokens, dim)))
        for index in range(1, depth + 1):
            layers[f"block{index}"] = Block(dim, heads, mlp_ratio, dropout, rngs)
        layers["norm"] = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
        layers["head"] = linear(dim, output_dim, rngs)
        if distillation_token:
            layers["dist_head"] = linear(dim, output_dim, rngs)
        super().__init__(layers)
        self.depth, self.distillation_token, self.deterministic = depth, distillation_token, False

    def set_view(self, deterministic: bool | None = None) -> None:
        """Called by ``nnx.view``: the output's mode (above)."""
        if deterministic is not None:
            self.deterministic = deterministic

    def run(self, x: jax.Array, taps: Sequence[str] = ()) -> tuple[jax.Array, dict[str, jax.Array]]:
        features: dict[str, jax.Array] = {}

        def tap(name: str, value: jax.Array) -> jax.Array:
            if name in taps:
                features[name] = channels_first(value)
            return value

        grid = tap("patch_embed", self.patch_embed(channels_last(x)))  # (B, H/p, W/p, D)
        batch, dim = grid.shape[0], grid.shape[-1]
        prefix = [self.cls_token[...]] + ([self.dist_token[...]] if self.distillation_token else [])
        x = jnp.concatenate([jnp.broadcast_to(token, (batch, 1, dim)) for token in prefix]
                            + [grid.reshape(batch, -1, dim)], axis=1) + self.pos_embed[...]
        for index in range(1, self.depth + 1):
            x = tap(f"block{index}", getattr(self, f"block{index}")(x))
        x = tap("norm", self.norm(x))
        logits = tap("head", self.head(x[:, 0]))
        if not self.distillation_token:
            return logits, features
        dist_logits = tap("dist_head", self.dist_head(x[:, 1]))
        if self.deterministic:
            return (logits + dist_logits) / 2, features
        return jnp.concatenate([logits, dist_logits], axis=-1), features


def vit(input_shape: Sequence[int], output_dim: int, patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4,
        mlp_ratio: int = 2, dropout: float = 0.0, distillation_token: bool = False, seed: int = 0) -> VisionTransformer:
    """A small ViT on (C, H, W) images, DeiT's distillation token optional: see
    :class:`VisionTransformer` for its layers and its outputs in each mode. The class and
    distillation tokens and position embeddings are initialised truncated-normal (std 0.02) as in
    DeiT; conv, linear and attention layers as PyTorch's. ``seed`` seeds weights and dropout."""
    shape = check_vit_inputs(input_shape, patch, dim, heads)
    return VisionTransformer(shape, output_dim, patch, dim, depth, heads, mlp_ratio, dropout, distillation_token,
                             nnx.Rngs(seed))


ZOO = {"mlp": mlp, "cnn": cnn, "vit": vit, "user_item": user_item, "text_mlp": text_mlp}
