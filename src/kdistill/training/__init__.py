"""The one training loop (:mod:`kdistill.training.loop`) every backend's models train in, and
what it is made of: the seeded epoch plan (:mod:`.plan`), checkpoints as safetensors + JSON
(:mod:`.checkpoint`) and training events (:mod:`.events`)."""

from __future__ import annotations

from dataclasses import dataclass, field

CHECK_EVERY = 20  # steps per chunk: one teacher-output read, one finiteness check (one host sync)


@dataclass
class History:
    """Per-epoch validation metric, mean training loss (``total`` and each part) and training
    seconds (validation excluded); their sum over the run."""

    metric: str
    val: list[float] = field(default_factory=list)
    loss: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
