"""The PyTorch backend: losses, distiller and trainer, feature hooks, zoo models, save/load.

``Distiller`` works inside any training loop: ``loss, parts = distiller(x, y)``.
"""

from kdistill.torch import losses
from kdistill.torch.distiller import Distiller
from kdistill.torch.models import load_model, save_model
from kdistill.torch.trainer import fit, predict

__all__ = ["Distiller", "fit", "load_model", "losses", "predict", "save_model"]
