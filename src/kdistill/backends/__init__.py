"""The registry of backends: every framework kdistill trains in, named once, with the pip extra
that installs it, the framework modules whose versions a report records, and what it can do.

Recipe validation, the CLI, ``kdistill compare`` and ``kdistill run`` ask this registry; none of
them names a backend. A new backend is one folder ``kdistill/NAME/`` whose ``backend.py``
implements :class:`kdistill.backends.contract.Backend` as ``BACKEND``, plus one entry here.
Importing this module imports no framework: :func:`load` imports the backend only when asked.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kdistill.errors import KdistillError

if TYPE_CHECKING:
    from kdistill.backends.contract import Backend

# what a backend can do, checked in one place (:func:`require`)
DATA_PARALLEL = "data_parallel"      # train.data_parallel: one process, several devices
NPROC = "nproc"                      # kdistill run/cache --nproc N: several processes
ONLINE_FOREIGN = "online_foreign"    # hosts a teacher of another framework per chunk of steps (teacher.online)
DLPACK_TEACHER = "dlpack_teacher"    # its teacher can run for another framework's student, by DLPack
FEATURES = "features"                # feature losses (hint, attention) between named layers
SEQUENCE_FEATURES = "sequence_features"  # transformer feature losses (hidden states, attention, embeddings)
EXPORT_ONNX = "export_onnx"          # kdistill export --format onnx (Backend.export)
EXPORT_TFLITE = "export_tflite"      # kdistill export --format tflite: a LiteRT flatbuffer
EXPORT_SAVEDMODEL = "export_savedmodel"  # kdistill export --format savedmodel: a TensorFlow SavedModel
EXPORT_HF = "export_hf"              # kdistill export --format hf: a transformer as a Hugging Face folder


@dataclass(frozen=True)
class BackendInfo:
    """A backend's name (the recipe's ``backend``), the pip extra that installs it, the modules a
    report names with their versions, and its capabilities."""

    name: str
    extra: str
    modules: tuple[str, ...]
    capabilities: frozenset[str]

    def framework_modules(self) -> tuple[str, ...]:
        """The modules this backend imports on this machine (Keras: also the framework it runs on)."""
        if self.name == "keras":
            return (*self.modules, os.environ.get("KERAS_BACKEND", "tensorflow"))
        return self.modules


REGISTRY: dict[str, BackendInfo] = {info.name: info for info in (
    BackendInfo("torch", "torch", ("torch",), frozenset({NPROC, ONLINE_FOREIGN, FEATURES, SEQUENCE_FEATURES, EXPORT_ONNX, EXPORT_HF})),
    BackendInfo("keras", "tensorflow", ("keras",), frozenset({DATA_PARALLEL, DLPACK_TEACHER, FEATURES, EXPORT_ONNX,
                                                             EXPORT_TFLITE, EXPORT_SAVEDMODEL})),
    BackendInfo("jax", "jax", ("jax", "flax", "optax"), frozenset({DATA_PARALLEL, DLPACK_TEACHER, FEATURES, EXPORT_ONNX,
                                                                 EXPORT_TFLITE, EXPORT_SAVEDMODEL})),
)}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def info(name: str, field: str = "backend") -> BackendInfo:
    """The registry entry of ``name``; an unknown name is a named error listing the known ones."""
    if name not in REGISTRY:
        raise KdistillError(f"{field}: {name!r} is not a backend; allowed: {', '.join(NAMES)}")
    return REGISTRY[name]


def supports(name: str, capability: str) -> bool:
    return capability in info(name).capabilities


def with_capability(capability: str) -> list[str]:
    """The backends that have ``capability``, in registry order (for error messages)."""
    return [name for name, entry in REGISTRY.items() if capability in entry.capabilities]


def import_module(name: str, module: str, field: str = "backend"):
    """``kdistill.NAME.MODULE``, imported only now (``import kdistill`` loads no framework); a
    missing framework is a named error (on the recipe's ``field``) saying which extra installs it."""
    entry = info(name, field)
    try:
        return importlib.import_module(f"kdistill.{name}.{module}")
    except ImportError as error:
        raise KdistillError(f"{field}: {name!r} needs {error.name or error}; "
                            f"pip install 'kdistill[{entry.extra}]'") from None


def load(name: str, field: str = "backend") -> "Backend":
    """The backend ``name`` (its ``kdistill.NAME.backend.BACKEND``), importing its framework now."""
    return import_module(name, "backend", field).BACKEND
