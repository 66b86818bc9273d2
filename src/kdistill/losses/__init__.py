"""The loss catalogue: names, what each loss reads and which tasks it serves.

The math lives in ``kdistill.losses.reference`` (numpy float64, the source of truth) and in one
module per framework (``kdistill.torch.losses``, ...), each tested against the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LossInfo:
    """inputs: "logits" (student & teacher outputs), "probs" (student logits & teacher
    probabilities), "features" (intermediate activations). default_temperature: None → the
    recipe's ``train.temperature``. needs_labels: the loss also reads the true class.
    params: the settings a recipe may give it under ``losses.NAME``. dense: it reads the raw
    logits themselves, not only their tempered softmax or argmax (so a top-k store cannot feed it).
    sequence: a feature loss between transformers' token sequences or sentence embeddings (its
    framework needs the ``sequence_features`` capability); masked: it also reads the batch's
    attention mask (tokenized text: which tokens are real)."""

    name: str
    inputs: str
    tasks: tuple[str, ...]
    default_temperature: float | None = None
    needs_labels: bool = False
    params: tuple[str, ...] = ("temperature",)
    dense: bool = True
    sequence: bool = False
    masked: bool = False


_ALL = ("classification", "binary", "regression", "ranking")
CATALOGUE: dict[str, LossInfo] = {
    info.name: info
    for info in (
        LossInfo("kd", "logits", ("classification",), dense=False),
        LossInfo("soft_ce", "probs", ("classification",), dense=False),
        LossInfo("binary_kd", "logits", ("binary",), dense=False),
        LossInfo("mse", "logits", _ALL, params=()),
        LossInfo("listwise", "logits", ("ranking",)),
        LossInfo("hint", "features", _ALL, params=()),
        LossInfo("attention", "features", _ALL, params=()),
        LossInfo("dkd", "logits", ("classification",), default_temperature=4.0, needs_labels=True,
                 params=("temperature", "alpha", "beta")),
        LossInfo("dist", "logits", ("classification",), default_temperature=1.0,
                 params=("temperature", "beta", "gamma")),
        LossInfo("hard", "logits", ("classification",), params=(), dense=False),
        LossInfo("hidden_cosine", "features", _ALL, params=(), sequence=True, masked=True),
        LossInfo("hidden_mse", "features", _ALL, params=(), sequence=True, masked=True),
        LossInfo("attention_kl", "features", _ALL, params=(), sequence=True, masked=True),
        LossInfo("embedding", "features", _ALL, params=("metric",), sequence=True),
    )
}
FEATURE_LOSSES = tuple(name for name, info in CATALOGUE.items() if info.inputs == "features")
LOSSES_BY_TASK: dict[str, tuple[str, ...]] = {
    task: tuple(name for name, info in CATALOGUE.items() if task in info.tasks) for task in _ALL
}


def by_name(namespace: Mapping[str, Any]) -> dict[str, Callable[..., Any]]:
    """A backend's catalogue table: each catalogue name → the function of that name in
    ``namespace`` (a losses module's ``globals()``); a missing loss is an error at import."""
    missing = [name for name in CATALOGUE if not callable(namespace.get(name))]
    if missing:
        raise ImportError(f"{namespace.get('__name__')}: no function for loss(es) {', '.join(missing)}")
    return {name: namespace[name] for name in CATALOGUE}
