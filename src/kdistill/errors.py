"""The one exception type users see: a bad recipe, bad data, a bad model or a diverged run."""


class KdistillError(Exception):
    """A problem with the user's input or run, reported without a traceback by the CLI (exit code 2)."""


class TrainingDiverged(KdistillError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint is kept."""

    def __init__(self, role: str, epoch: int, step: int, parts: dict[str, float], checkpoint: str | None):
        self.role, self.epoch, self.step, self.parts, self.checkpoint = role, epoch, step, parts, checkpoint
        shown = ", ".join(f"{name}={value:.4g}" for name, value in parts.items())
        kept = f"last good checkpoint kept at {checkpoint}" if checkpoint else "no checkpoint had been written yet"
        super().__init__(
            f"{role}: loss is not finite at epoch {epoch}, step {step} ({shown}); training stopped, {kept}"
        )
