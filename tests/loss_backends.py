"""Each backend's losses seen through one interface, for the conformance suite.

A backend gives ``functions`` (catalogue name → its loss function, for the signature check) and
``value_and_grad(case, student, second, kwargs, dtype)``: the loss value as a float and its
gradient in ``student`` as float64 numpy, computed in ``dtype`` ("float64" or "float32") from
numpy inputs. ``case`` is a catalogue name or ``task:<task>``. To add a backend, add a class and
list it in ``BACKENDS``; the suite skips backends whose framework is not installed.
"""

from __future__ import annotations

import importlib.util
from functools import partial

import numpy as np


class TorchLosses:
    name = "torch"
    framework = "torch"

    def __init__(self):
        import torch

        from kdistill.torch import losses

        self.torch, self.module = torch, losses
        self.functions = losses.LOSS_FUNCTIONS

    def function(self, case: str):
        if case.startswith("task:"):
            return partial(self.module.task_loss, task=case.removeprefix("task:"))
        return self.functions[case]

    def _tensor(self, x, dtype):
        """Arrays to tensors (integer ones stay int64 labels); plain numbers such as T pass through."""
        if not isinstance(x, np.ndarray):
            return x
        return self.torch.as_tensor(x) if np.issubdtype(x.dtype, np.integer) else self.torch.tensor(x, dtype=dtype)

    def value_and_grad(self, case, student, second, kwargs, dtype):
        dtype = getattr(self.torch, dtype)
        s = self.torch.tensor(student, dtype=dtype, requires_grad=True)
        value = self.function(case)(s, self._tensor(second, dtype), **{k: self._tensor(v, dtype) for k, v in kwargs.items()})
        value.backward()
        assert value.shape == () and value.dtype == dtype
        return value.item(), s.grad.numpy().astype(np.float64)


BACKENDS = {backend.name: backend for backend in (TorchLosses,)}


def available() -> list[str]:
    """Backend names whose framework is installed here."""
    return [name for name, backend in BACKENDS.items() if importlib.util.find_spec(backend.framework)]
