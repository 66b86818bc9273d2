"""What the report knows about one model: framework-neutral numbers measured by a backend."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ModelResult:
    """role: teacher | distilled | scratch. metrics: test-set task metrics at T = 1 (primary first).
    size_bytes: the saved weights file. latency_ms: median forward time at batch 1 and 256.
    agreement: top-1 agreement with the teacher on the test set. val_history: primary
    validation metric after each epoch (empty for a loaded teacher). A teacher known only by its
    stored outputs (a soft-target store) has no parameters, size or latency: None."""

    role: str
    metrics: dict[str, float]
    parameters: int | None
    size_bytes: int | None
    latency_ms: dict[str, float] | None
    agreement: float | None
    val_history: list[float]
    train_seconds: float | None

    def to_dict(self) -> dict:
        return asdict(self)
