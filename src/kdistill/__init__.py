"""kdistill: knowledge distillation for PyTorch, Keras 3 and JAX.

Importing this package imports no deep-learning framework; the backends live in
``kdistill.torch``, ``kdistill.keras`` and ``kdistill.jax``.
"""

from kdistill.errors import KdistillError
from kdistill.recipe import Recipe, load_recipe

__version__ = "0.1.0"
__all__ = ["KdistillError", "Recipe", "load_recipe", "__version__"]
