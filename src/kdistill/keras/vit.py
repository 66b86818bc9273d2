"""A small vision transformer for the Keras zoo: ``vit``, ViT (Dosovitskiy et al. 2021, "An Image
is Worth 16x16 Words") with DeiT's optional distillation token (Touvron et al. 2021, "Training
data-efficient image transformers & distillation through attention"). Same keyword arguments and
layer names as ``kdistill.torch.zoo``'s ``vit``. A Functional model, so every named layer can be
tapped; its own layers are registered Keras serializables, so its ``.keras`` file loads in safe
mode."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers, ops

from kdistill.zoo_inputs import check_vit_inputs


@keras.saving.register_keras_serializable(package="kdistill")
def gelu(x):
    """Exact GELU, x·Φ(x) = x/2 · (1 + erf(x/√2)): the function of Keras's ``"gelu"`` (and of
    PyTorch's ``nn.GELU``), written with erf because Keras's own lowers to TensorFlow's Erfc op,
    which tf2onnx cannot convert, so the model would not export to ONNX on TensorFlow."""
    return x * 0.5 * (1.0 + ops.erf(x / math.sqrt(2.0)))


@keras.saving.register_keras_serializable(package="kdistill")
class ClassTokens(layers.Layer):
    """(B, N, D) patch tokens → (B, T, D): a learnable ``cls_token`` (and, with ``distillation``, a
    ``dist_token``) prepended, ``[cls, dist, patches]``, plus a learnable positional embedding
    ``pos_embed`` (T, D), T = N + 1 (+ 1). Every weight starts truncated normal, std 0.02 (DeiT)."""

    def __init__(self, distillation: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.distillation = distillation

    def build(self, input_shape):
        dim, init = input_shape[-1], keras.initializers.TruncatedNormal(stddev=0.02)
        self.cls_token = self.add_weight(shape=(1, 1, dim), initializer=init, name="cls_token")
        self.dist_token = self.add_weight(shape=(1, 1, dim), initializer=init, name="dist_token") \
            if self.distillation else None
        self.pos_embed = self.add_weight(shape=(1, input_shape[1] + 1 + self.distillation, dim), initializer=init,
                                         name="pos_embed")

    def call(self, patches):
        zeros = ops.zeros_like(patches[:, :1])  # (B, 1, D): the tokens broadcast over any batch size
        tokens = [zeros + self.cls_token] + ([zeros + self.dist_token] if self.distillation else [])
        return ops.concatenate([*tokens, patches], axis=1) + self.pos_embed

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] + 1 + self.distillation, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "distillation": self.distillation}


@keras.saving.register_keras_serializable(package="kdistill")
class TokenAt(layers.Layer):
    """(B, T, D) → (B, D): the token at ``index`` (0: cls, 1: dist)."""

    def __init__(self, index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, tokens):
        return tokens[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="kdistill")
class DistillationHeads(layers.Layer):
    """DeiT's two heads as one output. ``training=True``: ``concatenate([cls_logits, dist_logits])``
    (B, 2·K), which the distiller splits (the cls half learns the labels, the dist half the
    teacher); otherwise DeiT's inference rule ``(cls_logits + dist_logits) / 2`` (B, K)."""

    def call(self, cls_logits, dist_logits, training=None):
        if training:
            return ops.concatenate([cls_logits, dist_logits], axis=-1)
        return (cls_logits + dist_logits) / 2

    def compute_output_shape(self, cls_logits_shape, dist_logits_shape):
        return cls_logits_shape  # the inference shape, (B, K), as the symbolic graph is built


def vit(input_shape: Sequence[int], output_dim: int, patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4,
        mlp_ratio: int = 2, dropout: float = 0.0, distillation_token: bool = False) -> keras.Model:
    """A vision transformer over (C, H, W) inputs, cut into (H/patch)·(W/patch) patches.

    ``channels_last`` (Permute to (H, W, C)) → ``patch_embed`` (Conv2D, kernel = stride = ``patch``,
    ``dim`` filters; channels-last (B, H/p, W/p, dim)) → ``patches`` ((B, N, dim) tokens) →
    ``pos_embed`` ([cls, (dist,) patches] + positional embedding, :class:`ClassTokens`) →
    ``block1``…``blockD``, each pre-norm: x + MHA(LN(x)), then x + MLP(LN(x)), MLP = Dense(dim ·
    mlp_ratio, exact :func:`gelu`) → Dropout → Dense(dim) → Dropout; layers ``blockK_norm1``,
    ``blockK_attn`` (``dropout`` on the attention weights too), ``blockK_add1``, ``blockK_norm2``,
    ``blockK_fc1``, ``blockK_drop1``, ``blockK_fc2``, ``blockK_drop2`` and ``blockK`` (the block's
    output, (B, T, dim)) → ``norm`` (LayerNormalization, epsilon 1e-6, as every norm here) → ``cls`` token
    → ``head`` (Dense(output_dim)).

    With ``distillation_token`` (DeiT): also the ``dist`` token → ``dist_head`` (Dense(output_dim)),
    and the output ``logits`` (:class:`DistillationHeads`) is ``concatenate([cls_logits,
    dist_logits])`` (B, 2·output_dim) when called with ``training=True`` and
    ``(cls_logits + dist_logits) / 2`` (B, output_dim) otherwise. Without it the output is the
    ``head`` logits (B, output_dim)."""
    check_vit_inputs(input_shape, patch, dim, heads)
    inputs = keras.Input(tuple(input_shape))
    x = layers.Permute((2, 3, 1), name="channels_last")(inputs)
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(x)
    x = layers.Reshape(((input_shape[1] // patch) * (input_shape[2] // patch), dim), name="patches")(x)
    x = ClassTokens(distillation_token, name="pos_embed")(x)
    for index in range(1, depth + 1):
        name = f"block{index}"
        y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
        y = layers.MultiHeadAttention(heads, dim // heads, dropout=dropout, name=f"{name}_attn")(y, y)
        x = layers.Add(name=f"{name}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)
        y = layers.Dense(dim * mlp_ratio, activation=gelu, name=f"{name}_fc1")(y)
        y = layers.Dropout(dropout, name=f"{name}_drop1")(y)
        y = layers.Dense(dim, name=f"{name}_fc2")(y)
        y = layers.Dropout(dropout, name=f"{name}_drop2")(y)
        x = layers.Add(name=name)([x, y])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    logits = layers.Dense(output_dim, name="head")(TokenAt(0, name="cls")(x))
    if distillation_token:
        dist_logits = layers.Dense(output_dim, name="dist_head")(TokenAt(1, name="dist")(x))
        logits = DistillationHeads(name="logits")(logits, dist_logits)
    return keras.Model(inputs, logits, name="vit")
