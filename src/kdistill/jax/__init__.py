"""The JAX backend (Flax NNX + Optax): losses, distiller and jitted trainer, zoo models, save/load.

``Distiller`` works inside any JAX training step: ``total, parts = distiller(trainee, teacher, x, y)``;
:func:`fit` is kdistill's own jitted loop around it.
"""

from kdistill.jax import losses
from kdistill.jax.distiller import Distiller
from kdistill.jax.models import load_model, save_model
from kdistill.jax.trainer import fit, predict

__all__ = ["Distiller", "fit", "load_model", "losses", "predict", "save_model"]
