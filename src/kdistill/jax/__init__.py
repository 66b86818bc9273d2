"""The JAX backend (Flax NNX + Optax): its contract implementation (``backend.BACKEND``), losses,
distiller, zoo models, save/load.

``Distiller`` works inside any JAX training step: ``total, parts = distiller(trainee, teacher, x, y)``;
:func:`fit` is kdistill's one training loop around it, with this backend's jitted step.
"""

from kdistill.jax import losses
from kdistill.jax.backend import BACKEND, predict
from kdistill.jax.distiller import Distiller
from kdistill.jax.models import load_model, save_model

fit = BACKEND.fit

__all__ = ["BACKEND", "Distiller", "fit", "load_model", "losses", "predict", "save_model"]
