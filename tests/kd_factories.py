"""Model factories for tests, referenced from recipes by import path ``kd_factories:NAME``
(``tests/conftest.py`` puts this directory on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdistill.torch.zoo import mlp


def extra_classes(input_shape: Sequence[int], output_dim: int, extra: int = 2) -> nn.Module:
    """An MLP that ignores the dataset's class count: ``output_dim + extra`` outputs."""
    return mlp(input_shape, output_dim + extra, hidden=(8,))


class NanAfter(nn.Module):
    """An MLP whose outputs become NaN from its ``steps + 1``-th forward pass in training mode
    (eval-mode passes, such as validation, are not counted and stay finite)."""

    def __init__(self, input_shape: Sequence[int], output_dim: int, steps: int):
        super().__init__()
        self.net = mlp(input_shape, output_dim, hidden=(16,))
        self.steps, self.calls = steps, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                return out * float("nan")
        return out


def nan_after(input_shape: Sequence[int], output_dim: int, steps: int) -> nn.Module:
    return NanAfter(input_shape, output_dim, steps)


class SlowTeacher(nn.Module):
    """A linear teacher that sleeps ``seconds`` per forward pass, so a cache run can be killed part-way."""

    def __init__(self, input_width: int, output_dim: int, seconds: float):
        super().__init__()
        self.net, self.seconds = nn.Linear(input_width, output_dim), seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.seconds)
        return self.net(x.flatten(1))


class CrashOnRank(nn.Module):
    """An MLP whose process raises in its ``steps + 1``-th training forward pass (any forward
    pass with ``count_eval``) when the environment names its rank in ``KDISTILL_TEST_CRASH_RANK``:
    one failing rank of a job."""

    def __init__(self, input_shape: Sequence[int], output_dim: int, steps: int, count_eval: bool = False):
        super().__init__()
        self.net = mlp(input_shape, output_dim, hidden=(32,))
        self.steps, self.calls, self.count_eval = steps, 0, count_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import os

        if self.training or self.count_eval:
            self.calls += 1
            if self.calls > self.steps and os.environ.get("KDISTILL_TEST_CRASH_RANK") == os.environ.get("RANK", "0"):
                raise RuntimeError(f"rank {os.environ.get('RANK')} fails on purpose at training step {self.calls}")
        return self.net(x)


def crash_on_rank(input_shape: Sequence[int], output_dim: int, steps: int, count_eval: bool = False) -> nn.Module:
    return CrashOnRank(input_shape, output_dim, steps, count_eval)
