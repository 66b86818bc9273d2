"""The PyTorch backend: losses, distiller and trainer, feature hooks, zoo models, save/load."""
