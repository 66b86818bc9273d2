"""A small vision transformer: the zoo model ``vit`` (Dosovitskiy et al. 2021, "An Image is Worth
16x16 Words"), with DeiT's optional distillation token (Touvron et al. 2021, "Training
data-efficient image transformers & distillation through attention").

Layers carry readable names for feature paths: ``patch_embed`` (the patch convolution, (B, dim,
H/p, W/p)), ``block1`` … ``blockD`` (tokens (B, T, dim)), ``norm``, ``head`` and ``dist_head``
(logits (B, output_dim))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdistill.zoo_inputs import check_vit_inputs


class Block(nn.Module):
    """A pre-norm transformer block on tokens (B, T, dim): x + Attn(LN(x)), then x + MLP(LN(x)),
    MLP = fc1 (dim → dim·mlp_ratio) → GELU → dropout → fc2 → dropout."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(dim * mlp_ratio, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Images (B, C, H, W) → logits: ``patch_embed`` (a patch×patch convolution of stride patch,
    N = HW/patch² tokens) → [cls, (dist,) patches] + ``pos_embed`` → ``block1`` … ``blockD`` →
    ``norm`` → ``head`` on the cls token (ViT, Dosovitskiy et al. 2021).

    With ``distillation_token`` (DeiT, Touvron et al. 2021) a second learned token ``dist_token``
    follows the cls token and ``dist_head`` reads its output. The forward then depends on the mode:

    - training (``self.training``): ``torch.cat([cls_logits, dist_logits], dim=-1)``, (B, 2·output_dim);
      the distiller splits it, the cls half trained on the labels and the dist half on the teacher;
    - eval: ``(cls_logits + dist_logits) / 2``, (B, output_dim), DeiT's inference rule.

    Without the token the forward is ``head`` logits (B, output_dim) in both modes."""

    def __init__(self, in_channels: int, tokens: int, output_dim: int, patch: int, dim: int, depth: int, heads: int,
                 mlp_ratio: int, dropout: float, distillation_token: bool):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distillation_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1 + distillation_token, dim))
        for parameter in (self.cls_token, self.dist_token, self.pos_embed):
            if parameter is not None:
                nn.init.trunc_normal_(parameter, std=0.02)
        self.blocks = tuple(f"block{index}" for index in range(1, depth + 1))
        for name in self.blocks:
            self.add_module(name, Block(dim, heads, mlp_ratio, dropout))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, output_dim)
        self.dist_head = nn.Linear(dim, output_dim) if distillation_token else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        extra = [self.cls_token] if self.dist_token is None else [self.cls_token, self.dist_token]
        x = torch.cat([token.expand(x.shape[0], -1, -1) for token in extra] + [x], dim=1) + self.pos_embed
        for name in self.blocks:
            x = getattr(self, name)(x)
        x = self.norm(x)
        cls_logits = self.head(x[:, 0])
        if self.dist_head is None:
            return cls_logits
        dist_logits = self.dist_head(x[:, 1])
        if self.training:
            return torch.cat([cls_logits, dist_logits], dim=-1)
        return (cls_logits + dist_logits) / 2


def vit(input_shape: Sequence[int], output_dim: int, patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4,
        mlp_ratio: int = 2, dropout: float = 0.0, distillation_token: bool = False) -> VisionTransformer:
    """A small vision transformer on images (C, H, W) (:class:`VisionTransformer`): ``patch``
    divides H and W, ``heads`` divides ``dim``; ``distillation_token`` adds DeiT's dist token and
    ``dist_head`` (training-mode outputs (B, 2·output_dim), eval-mode the mean of the two heads)."""
    in_channels, height, width = check_vit_inputs(input_shape, patch, dim, heads)
    tokens = (height // patch) * (width // patch)
    return VisionTransformer(in_channels, tokens, output_dim, patch, dim, depth, heads, mlp_ratio, dropout,
                             distillation_token)
