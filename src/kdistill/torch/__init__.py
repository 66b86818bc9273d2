"""The PyTorch backend: its contract implementation (``backend.BACKEND``), losses, distiller,
feature hooks, zoo models, save/load.

``Distiller`` works inside any training loop: ``loss, parts = distiller(x, y)``; :func:`fit` is
kdistill's one training loop on this backend.
"""

from kdistill.torch import losses
from kdistill.torch.backend import BACKEND, predict
from kdistill.torch.distiller import Distiller
from kdistill.torch.models import load_model, save_model

fit = BACKEND.fit

__all__ = ["BACKEND", "Distiller", "fit", "load_model", "losses", "predict", "save_model"]
