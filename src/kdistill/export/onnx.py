"""ONNX files in onnxruntime: a session with a chosen number of intra-op threads as
``x -> outputs``, the file's input and output, and the metadata a file carries
(``metadata_props``: class names, task, preprocessing)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


def runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> first output`` of ``path`` in onnxruntime on the CPU; ``threads``: intra-op
    threads (None: onnxruntime's default, every physical core), one inter-op thread. Idle
    threads sleep instead of spinning, so sessions timed side by side with the framework do
    not take its cores."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def signature(path: Path) -> dict:
    """The file's first input and output: name, shape (symbolic dimensions as their names) and type."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (first, *_), (out, *_) = session.get_inputs(), session.get_outputs()
    return {"input": {"name": first.name, "shape": first.shape, "type": first.type},
            "output": {"name": out.name, "shape": out.shape, "type": out.type}}


def add_metadata(path: Path, properties: dict) -> None:
    """Write ``properties`` into the file's ``metadata_props`` (values that are not strings as JSON)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {key: value if isinstance(value, str) else json.dumps(value)
                                        for key, value in properties.items()})
    onnx.save(model, str(path))


def metadata(path: Path) -> dict[str, str]:
    """The file's ``metadata_props`` as read by onnxruntime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)
