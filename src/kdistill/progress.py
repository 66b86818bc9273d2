"""Progress display for training: a rich bar per model with loss and metric, and about ten epoch log lines."""

from __future__ import annotations

import time
from contextlib import contextmanager
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class EpochProgress:
    def __init__(self, progress: Progress | None, role: str, epochs: int, steps: int):
        self._progress, self._role, self._epochs, self._steps = progress, role, epochs, steps
        self._task = progress.add_task(role, total=epochs * steps, info="") if progress else None

    def skip(self, epochs_done: int) -> None:
        """Account for epochs restored from a checkpoint."""
        if epochs_done:
            self._update(epochs_done * self._steps, f"resumed after epoch {epochs_done}")

    def step(self, epoch: int, steps_done: int, loss: float) -> None:
        self._update(epoch * self._steps + steps_done, f"epoch {epoch + 1}/{self._epochs} loss {loss:.4f}")

    def end_epoch(self, epoch: int, loss: float, **metrics: float) -> None:
        shown = " ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        every = max(1, self._epochs // 10)  # about ten lines per model
        if self._progress is not None and ((epoch + 1) % every == 0 or epoch + 1 == self._epochs):
            self._progress.console.print(f"{self._role:>9} epoch {epoch + 1}/{self._epochs}  loss {loss:.4f}  val {shown}")

    def _update(self, completed: int, info: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, info=info)


@contextmanager
def epoch_progress(role: str, epochs: int, steps: int, enabled: bool = True) -> Iterator[EpochProgress]:
    if not enabled:
        yield EpochProgress(None, role, epochs, steps)
        return
    columns = (TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        yield EpochProgress(progress, role, epochs, steps)


@contextmanager
def sample_progress(label: str, total: int, done: int = 0) -> Iterator:
    """A bar over samples with throughput; yields ``advance(n)``."""
    columns = (TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=total, completed=done, rate="")
        started, counted = time.perf_counter(), 0

        def advance(count: int) -> None:
            nonlocal counted
            counted += count
            rate = counted / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=count, rate=f"{rate:,.0f} samples/s")

        yield advance
