"""ONNX from a ``torch.nn.Module``: ``torch.onnx.export`` with ``dynamo=True`` (the exporter of
torch >= 2.9, built on ``torch.export`` and onnxscript; nothing is downloaded), the batch
dimension a ``torch.export.Dim``. A model it cannot trace is named by its first submodule that
``torch.export`` cannot trace on the inputs that submodule saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdistill.errors import KdistillError, writing
from kdistill.export.quiet import quiet

INPUT, OUTPUT = "inputs", "logits"


def _untraceable_layer(model: nn.Module, example: torch.Tensor) -> str | None:
    """The first leaf submodule (in call order) that ``torch.export`` cannot trace on the inputs
    it received in an eager forward of ``example``, as ``name (Class)``; None if every one traces."""
    seen: list[tuple[str, nn.Module, tuple]] = []
    hooks = [module.register_forward_hook(lambda module, args, _out, name=name: seen.append((name, module, args)))
             for name, module in model.named_modules() if name and not any(True for _ in module.children())]
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # the model fails eagerly too: the layers seen so far traced
        pass
    finally:
        for hook in hooks:
            hook.remove()
    for name, module, args in seen:
        try:
            torch.export.export(module, args, strict=False)
        except Exception as error:
            return f"{name} ({type(module).__name__}: {str(error).splitlines()[0]})"
    return None


def export(model: nn.Module, format: str, path: Path, example: np.ndarray) -> None:
    """``model`` in eval mode as ONNX at ``path`` (input ``inputs`` (batch, *shape), output
    ``logits``; weights inside the file), or for ``hf`` a transformer as the Hugging Face folder
    ``path`` (:func:`kdistill.torch.transformer.save_pretrained`)."""
    if format == "hf":
        from kdistill.torch.transformer import save_pretrained

        with writing(path, "this Hugging Face folder"):
            save_pretrained(model, path)
        return
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    x = torch.from_numpy(np.ascontiguousarray(example)).to(device)
    batch = torch.export.Dim("batch", min=1)
    try:
        with quiet():
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=({0: batch},), external_data=False, verbose=False)
    except Exception as error:
        with quiet():
            layer = _untraceable_layer(model, x)
        where = f"layer {layer}" if layer else f"{type(model).__name__}: {str(error).splitlines()[0]}"
        raise KdistillError(f"--format onnx: torch.onnx.export cannot trace the model: {where}") from None
    finally:
        model.train(was_training)
    with writing(path, "this ONNX file"):
        program.save(str(path), external_data=False)
