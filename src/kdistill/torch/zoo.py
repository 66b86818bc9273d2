"""Built-in PyTorch models: MLP, small CNN, small vision transformer (ViT, DeiT's distillation token),
user–item scorer, text MLP. Layers carry readable names (``fc1``, ``conv2``, ``pool``, ``block1``,
``head``) so feature-distillation paths are easy to write."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from kdistill.errors import KdistillError
from kdistill.torch.transformer import transformer
from kdistill.torch.vit import vit
from kdistill.zoo_inputs import check_token_inputs


def dense_layers(width: int, output_dim: int, hidden: Sequence[int], dropout: float) -> OrderedDict[str, nn.Module]:
    """[fcK → reluK → dropK]… → head, from ``width`` inputs."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, size in enumerate(hidden, start=1):
        layers[f"fc{index}"] = nn.Linear(width, size)
        layers[f"relu{index}"] = nn.ReLU()
        if dropout:
            layers[f"drop{index}"] = nn.Dropout(dropout)
        width = size
    layers["head"] = nn.Linear(width, output_dim)
    return layers


def mlp(input_shape: Sequence[int], output_dim: int, hidden: Sequence[int] = (128,), dropout: float = 0.0,
        input_dropout: float = 0.0) -> nn.Module:
    """Flatten → [fcK → reluK → dropK]… → head. ``mlp(hidden=[1200, 1200], dropout=0.5,
    input_dropout=0.2)`` is Hinton et al. 2015's MNIST teacher."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    if input_dropout:
        layers["drop0"] = nn.Dropout(input_dropout)
    layers.update(dense_layers(math.prod(input_shape), output_dim, hidden, dropout))
    return nn.Sequential(layers)


def cnn(input_shape: Sequence[int], output_dim: int, channels: Sequence[int] = (32, 64), hidden: int = 128,
        dropout: float = 0.0) -> nn.Module:
    """[convK (3×3) → reluK → poolK (2×2)]… → flatten → fc → relu → head (LeNet-style).
    Input (C, H, W); with ``dropout`` a dropout layer follows every block, as in seed 003's teacher."""
    if len(input_shape) != 3:
        raise KdistillError(f"student/teacher model 'cnn' needs image inputs (C, H, W), the data gives {tuple(input_shape)}")
    in_channels, height, width = input_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index, size in enumerate(channels, start=1):
        layers[f"conv{index}"] = nn.Conv2d(in_channels, size, kernel_size=3, padding=1)
        layers[f"relu{index}"] = nn.ReLU()
        layers[f"pool{index}"] = nn.MaxPool2d(2)
        if dropout:
            layers[f"drop{index}"] = nn.Dropout(dropout)
        in_channels, height, width = size, height // 2, width // 2
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(in_channels * height * width, hidden)
    layers["relu"] = nn.ReLU()
    if dropout:
        layers["drop"] = nn.Dropout(dropout)
    layers["head"] = nn.Linear(hidden, output_dim)
    return nn.Sequential(layers)


class UserItemScorer(nn.Module):
    """Scores each (user, candidate item) pair of a list: x (B, 1 + L) int64 → scores (B, L).

    score = ⟨u, v⟩ + MLP([u; v]): a matrix-factorisation dot product (which an MLP on the
    concatenation learns poorly, Rendle et al. 2020) plus seed 000's MLP on the concatenated
    embeddings; ``hidden=()`` makes that MLP a single linear layer (seed 000's student)."""

    def __init__(self, n_users: int, n_items: int, embedding: int = 32, hidden: Sequence[int] = (64,)):
        super().__init__()
        self.user_embedding = nn.Embedding(n_users, embedding)
        self.item_embedding = nn.Embedding(n_items, embedding)
        for table in (self.user_embedding, self.item_embedding):  # ⟨u, v⟩ starts with variance 1/16
            nn.init.normal_(table.weight, std=0.5 * embedding**-0.25)
        self.scorer = mlp((2 * embedding,), 1, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        users, items = x[:, 0], x[:, 1:]
        user_vectors = self.user_embedding(users)[:, None, :].expand(-1, items.shape[1], -1)
        item_vectors = self.item_embedding(items)
        pairs = torch.cat([user_vectors, item_vectors], dim=-1)
        mlp_scores = self.scorer(pairs.reshape(-1, pairs.shape[-1])).reshape(items.shape)
        return (user_vectors * item_vectors).sum(dim=-1) + mlp_scores


def user_item(input_shape: Sequence[int], output_dim: int, n_users: int, n_items: int, embedding: int = 32,
              hidden: Sequence[int] = (64,)) -> nn.Module:
    if input_shape[0] != output_dim + 1:
        raise KdistillError(f"model 'user_item' needs inputs (1 + L,) = (user, items…); got {tuple(input_shape)} for L={output_dim}")
    return UserItemScorer(n_users, n_items, embedding, hidden)


class MaskedMeanPool(nn.Module):
    """(B, L, D) token vectors and (B, 2, L) tokens → (B, D): the mean over the real tokens
    (attention mask ``tokens[:, 1]`` = 1). Padding is left out exactly (its vectors are multiplied
    by 0); a sequence without a real token gives zeros."""

    def forward(self, vectors: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        mask = tokens[:, 1].unsqueeze(-1).to(vectors.dtype)
        return (vectors * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class TextMLP(nn.Module):
    """Tokens (B, 2, L) int → logits: ``embedding`` of the ids → ``pool`` (masked mean, (B, D)) →
    [fcK → reluK → dropK]… → ``head``. Every stage is a submodule of its own name, so feature paths
    (``pool``, ``fc1``) read it; ``embedding`` gives (B, L, D)."""

    def __init__(self, vocab_size: int, output_dim: int, embedding: int = 64, hidden: Sequence[int] = (128,),
                 dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding)
        self.pool = MaskedMeanPool()
        dense = dense_layers(embedding, output_dim, hidden, dropout)
        for name, layer in dense.items():
            self.add_module(name, layer)
        self.dense = tuple(dense)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.embedding(tokens[:, 0]), tokens)
        for name in self.dense:
            x = getattr(self, name)(x)
        return x


def text_mlp(input_shape: Sequence[int], output_dim: int, vocab_size: int | None = None, embedding: int = 64,
             hidden: Sequence[int] = (128,), dropout: float = 0.0, input_dtype: str = "int32") -> nn.Module:
    """A small text classifier on tokenized text (2, L) (:class:`TextMLP`); ``vocab_size`` comes
    from the data's meta (the tokenizer's vocabulary)."""
    check_token_inputs("text_mlp", input_shape, input_dtype, vocab_size)
    return TextMLP(vocab_size, output_dim, embedding, hidden, dropout)


ZOO = {"mlp": mlp, "cnn": cnn, "vit": vit, "user_item": user_item, "transformer": transformer, "text_mlp": text_mlp}
