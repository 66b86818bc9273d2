"""Hugging Face transformer encoders as text classifiers: the zoo model ``transformer``.

A :class:`TextTransformer` reads tokenized text (:mod:`kdistill.data.text_encoding`: int
``(B, 2, L)``, token ids and attention mask) and returns class logits: the encoder
(``transformers.AutoModel``, loaded from a local folder or an installed package's model with
``local_files_only=True`` and safetensors weights only, so no file runs code) → pooling → dropout
→ a linear head. Pooling is the model's own: ``cls`` is BERT's pooler (the [CLS] token's hidden
state through a dense layer and tanh, what ``BertForSequenceClassification`` classifies), ``mean``
the masked mean of the last hidden states (sentence-transformers' models, whose folder says so in
``1_Pooling/config.json``).

Students are made from the teacher's own layers (``layers: [0, 2, 4]``: DistilBERT's one layer in
two, Sanh et al. 2019) or from a smaller ``config`` with random weights. Feature losses name layers
by module path: ``encoder.encoder.layer.K`` (hidden states, (B, L, H)),
``encoder.encoder.layer.K.attention.self`` (attention probabilities (B, heads, L, L): a model
an ``attention_kl`` loss reads runs eager attention, :func:`expose_attention`), ``pool`` (the
pooled sentence embedding, (B, H)).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdistill.errors import KdistillError
from kdistill.pretrained import model_file, model_folder

POOLING = ("cls", "mean")


class Pooling(nn.Module):
    """The sentence embedding (B, H) of an encoder's output: BERT's pooler output (``cls``) or the
    mean of the last hidden states over real tokens (``mean``)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, output: Any, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "cls":
            return output.pooler_output
        weights = mask.unsqueeze(-1).to(output.last_hidden_state.dtype)
        return (output.last_hidden_state * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def extra_repr(self) -> str:
        return self.mode


class TextTransformer(nn.Module):
    """Tokenized text (B, 2, L) → encoder → pooling → dropout → head → logits (B, output_dim)."""

    def __init__(self, encoder: nn.Module, output_dim: int, pooling: str, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.pool = Pooling(pooling)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0], x[:, 1]
        return self.head(self.dropout(self.pool(self.encoder(input_ids=ids, attention_mask=mask), mask)))


def transformer(input_shape: Sequence[int], output_dim: int, pretrained: str | None = None,
                config: dict[str, Any] | None = None, layers: Sequence[int] | None = None,
                pooling: str | None = None, dropout: float | None = None,
                vocab_size: int | None = None) -> TextTransformer:
    """A text classifier on a Hugging Face encoder.

    ``pretrained``: a model folder or a short name (``minilm-l6``, :mod:`kdistill.pretrained`),
    whose weights are loaded; with ``config`` (e.g. ``{num_hidden_layers: 2, hidden_size: 32}``)
    the architecture is that folder's config (a BERT's without a folder) updated by it, from random
    weights. ``layers``: keep only these encoder layers, in this order (a student from the teacher's
    layers). ``pooling``: ``cls`` or ``mean`` (default: what the folder says, else ``cls``).
    ``dropout``: before the head (default: the config's classifier dropout, else its hidden
    dropout). ``vocab_size``: the tokenizer's (from the data), which must fit the embeddings."""
    if len(input_shape) != 2 or input_shape[0] != 2:
        raise KdistillError(f"model 'transformer' reads tokenized text (2, max_length): set data.text.tokenizer; "
                            f"the data gives inputs {tuple(input_shape)}")
    if pretrained is None and config is None:
        raise KdistillError("kwargs: model 'transformer' needs pretrained (a model folder or name) or config")
    folder = model_folder(pretrained, "kwargs.pretrained") if pretrained is not None else None
    pooling = pooling or _folder_pooling(folder)
    if pooling not in POOLING:
        raise KdistillError(f"kwargs.pooling: {pooling!r}; allowed: {', '.join(POOLING)}")
    encoder = _encoder(folder, config, vocab_size, add_pooling_layer=pooling == "cls")
    if layers is not None:
        _keep_layers(encoder, layers)
    hidden_dropout = getattr(encoder.config, "classifier_dropout", None)
    if hidden_dropout is None:
        hidden_dropout = getattr(encoder.config, "hidden_dropout_prob", 0.0)
    return TextTransformer(encoder, output_dim, pooling, hidden_dropout if dropout is None else dropout)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers without its loading progress bars and notices (kdistill reports what matters)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _encoder(folder: Path | None, config: dict[str, Any] | None, vocab_size: int | None, *,
             add_pooling_layer: bool) -> nn.Module:
    from transformers import AutoConfig, AutoModel, BertConfig

    with quiet_transformers():
        if config is None:
            model_file(folder, "config.json", "kwargs.pretrained")
            model_file(folder, "model.safetensors", "kwargs.pretrained")
            encoder = AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                add_pooling_layer=add_pooling_layer)
        else:
            base = AutoConfig.from_pretrained(folder, local_files_only=True) if folder is not None else BertConfig()
            settings = {"vocab_size": vocab_size, **config} if vocab_size is not None else dict(config)
            try:
                for key, value in settings.items():
                    if not hasattr(base, key):
                        raise KdistillError(f"kwargs.config.{key}: not a field of {type(base).__name__}")
                    setattr(base, key, value)
                encoder = AutoModel.from_config(base, add_pooling_layer=add_pooling_layer)
            except (ValueError, TypeError) as error:
                raise KdistillError(f"kwargs.config: {config} does not make a {type(base).__name__} model: {error}") from None
    embeddings = encoder.get_input_embeddings().num_embeddings
    if vocab_size is not None and vocab_size > embeddings:
        raise KdistillError(f"kwargs.pretrained: the tokenizer's {vocab_size} tokens do not fit the model's {embeddings} "
                            "embeddings (data.text.tokenizer must be the model's own)")
    return encoder


def expose_attention(model: nn.Module) -> None:
    """Switch every Hugging Face model inside ``model`` to eager attention, whose attention layers
    return their probabilities (SDPA, the default, computes none): what ``attention_kl`` reads."""
    for module in model.modules():
        if hasattr(module, "set_attn_implementation") and hasattr(module, "config"):
            module.set_attn_implementation("eager")


def _folder_pooling(folder: Path | None) -> str:
    """``mean`` when the folder is a sentence-transformers model pooled by mean, else ``cls``."""
    settings = folder / "1_Pooling" / "config.json" if folder is not None else None
    if settings is None or not settings.is_file():
        return "cls"
    return "mean" if json.loads(settings.read_text()).get("pooling_mode_mean_tokens") else "cls"


def _keep_layers(encoder: nn.Module, layers: Sequence[int]) -> None:
    """Keep the encoder layers ``layers`` (indices into the full stack, each once, in order)."""
    stack = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise KdistillError(f"kwargs.layers: {type(encoder).__name__} has no encoder.layer stack to take layers from")
    bad = [index for index in layers if not 0 <= index < len(stack)]
    if bad or not layers or len(set(layers)) != len(layers) or list(layers) != sorted(layers):
        raise KdistillError(f"kwargs.layers: {list(layers)}; give increasing layer indices in 0..{len(stack) - 1}, each once")
    encoder.encoder.layer = nn.ModuleList(stack[index] for index in layers)
    for position, layer in enumerate(encoder.encoder.layer):
        if hasattr(layer.attention.self, "layer_idx"):
            layer.attention.self.layer_idx = position
    encoder.config.num_hidden_layers = len(layers)


def save_pretrained(model: nn.Module, path: Path) -> None:
    """``model`` (a ``cls``-pooled :class:`TextTransformer`) as the Hugging Face folder
    ``AutoModelForSequenceClassification`` reloads: the same encoder, pooler and head, so the
    reloaded model's logits are this model's."""
    if not isinstance(model, TextTransformer) or model.pool.mode != "cls":
        raise KdistillError("--format hf: a Hugging Face folder reloads as AutoModelForSequenceClassification, which "
                            "classifies BERT's pooled [CLS] token: export a 'transformer' model with pooling: cls")
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.encoder.config)
    config.num_labels = model.head.out_features
    with quiet_transformers():
        shipped = AutoModelForSequenceClassification.from_config(config)
    classifier = getattr(shipped, "classifier", None)
    if not isinstance(classifier, nn.Linear) or classifier.in_features != model.head.in_features:
        raise KdistillError(f"--format hf: {type(shipped).__name__} has no linear classifier on the pooled output")
    shipped.base_model.load_state_dict(model.encoder.state_dict())
    classifier.load_state_dict(model.head.state_dict())
    with quiet_transformers():
        shipped.save_pretrained(path, safe_serialization=True)
