"""Each backend's losses seen through one interface, for the conformance suite.

A backend gives ``functions`` (catalogue name → its loss function, for the signature check) and
``value_and_grad(case, student, second, kwargs, dtype)``: the loss value as a float and its
gradient in ``student`` as float64 numpy, computed in ``dtype`` ("float64" or "float32") from
numpy inputs. ``case`` is a catalogue name or ``task:<task>``. To add a backend, add a class and
list it in ``BACKENDS``; the suite skips backends whose framework is not installed.
"""

from __future__ import annotations

import importlib.util
import os
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


class JaxLosses(TorchLosses):
    """The same case lookup as TorchLosses (``function``); float64 runs in a scoped x64 context."""

    name = "jax"
    framework = "jax"

    def __init__(self):
        import jax

        from kdistill.jax import losses

        self.jax, self.module = jax, losses
        self.functions = losses.LOSS_FUNCTIONS

    def value_and_grad(self, case, student, second, kwargs, dtype):
        jnp = self.jax.numpy
        with self.jax.enable_x64(dtype == "float64"):
            def array(x):
                if not isinstance(x, np.ndarray):
                    return x
                return jnp.asarray(x) if np.issubdtype(x.dtype, np.integer) else jnp.asarray(x, dtype=dtype)

            loss, other, options = self.function(case), array(second), {k: array(v) for k, v in kwargs.items()}
            value, grad = self.jax.jit(self.jax.value_and_grad(lambda s: loss(s, other, **options)))(array(student))
            assert value.shape == () and value.dtype == jnp.dtype(dtype)
            return float(value), np.asarray(grad, dtype=np.float64)


class KerasLosses(TorchLosses):
    """Keras 3 (keras.ops) losses on the backend ``KERAS_BACKEND`` names, TensorFlow by default.
    Keras fixes its backend at import, so the JAX and torch backends run in a subprocess
    (tests/test_pipeline_keras.py); their gradients come from JaxLosses' and TorchLosses' code."""

    name = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
    framework = "keras"

    def __init__(self):
        import keras

        from kdistill.keras import losses

        self.module, self.functions = losses, losses.LOSS_FUNCTIONS
        self.backend = keras.backend.backend()
        if self.backend == "jax":
            import jax

            self.jax = jax
        elif self.backend == "torch":
            import torch

            self.torch = torch

    def value_and_grad(self, case, student, second, kwargs, dtype):
        if self.backend == "jax":
            return JaxLosses.value_and_grad(self, case, student, second, kwargs, dtype)
        if self.backend == "torch":
            return TorchLosses.value_and_grad(self, case, student, second, kwargs, dtype)
        import tensorflow as tf

        def tensor(x):
            if not isinstance(x, np.ndarray):
                return x
            return tf.constant(x) if np.issubdtype(x.dtype, np.integer) else tf.constant(x, dtype=dtype)

        s = tensor(student)
        with tf.GradientTape() as tape:
            tape.watch(s)
            value = self.function(case)(s, tensor(second), **{k: tensor(v) for k, v in kwargs.items()})
        grad = tape.gradient(value, s)
        assert value.shape == () and value.dtype == dtype
        return float(value), grad.numpy().astype(np.float64)


BACKENDS = {backend.name: backend for backend in (TorchLosses, JaxLosses, KerasLosses)}


def available() -> list[str]:
    """Backend names whose framework is installed here."""
    return [name for name, backend in BACKENDS.items() if importlib.util.find_spec(backend.framework)]
