"""Hugging Face folders in transformers: what ``AutoModelForSequenceClassification.from_pretrained``
reloads, run as ``x -> logits`` on tokenized text (int ``(B, 2, L)``: ids and attention mask), the
folder's signature, and what it carries besides the weights: the tokenizer the data was encoded
with (so ``AutoTokenizer.from_pretrained`` reloads it too) and the class names as ``id2label``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kdistill.data.text_encoding import IDS, MASK, tokenizer_file
from kdistill.errors import KdistillError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def load(path: Path):
    """The folder as ``AutoModelForSequenceClassification`` in eval mode (local files, safetensors)."""
    from transformers import AutoModelForSequenceClassification

    from kdistill.torch.transformer import quiet_transformers

    with quiet_transformers():
        return AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True,
                                                                  use_safetensors=True).eval()


def runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``x -> logits`` of the folder in transformers on the CPU, on ``threads`` intra-op threads
    (None: torch's default), restored after each call."""
    import torch

    model = load(path)

    def run(x: np.ndarray) -> np.ndarray:
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            tokens = torch.from_numpy(np.ascontiguousarray(x))
            with torch.inference_mode():
                return model(input_ids=tokens[:, IDS], attention_mask=tokens[:, MASK]).logits.numpy()
        finally:
            torch.set_num_threads(before)
    return run


def signature(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    return {"input": {"name": "input_ids, attention_mask", "shape": [None, None], "type": "int64"},
            "output": {"name": "logits", "shape": [None, len(config.get("id2label", {}))], "type": "float32"},
            "architecture": config.get("architectures")}


def add_metadata(path: Path, properties: dict) -> None:
    """The tokenizer the data was encoded with, beside the weights, and the class names in
    ``config.json`` (``id2label``/``label2id``)."""
    decode = (properties.get("kdistill.preprocessing") or {}).get("decode") or {}
    tokenizer = (decode.get("text") or {}).get("tokenizer")
    if tokenizer is None:
        raise KdistillError("--format hf: the run's data is not tokenized text (data.text.tokenizer), which a Hugging "
                            "Face folder reloads with its tokenizer")
    source = tokenizer_file(tokenizer)
    for name in TOKENIZER_FILES:
        if (source.parent / name).is_file():
            shutil.copy(source.parent / name, path / name)
    shutil.copy(source, path / "tokenizer.json")
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    classes = properties.get("kdistill.classes") or []
    config["id2label"] = {str(index): str(name) for index, name in enumerate(classes)} or config.get("id2label")
    config["label2id"] = {str(name): index for index, name in enumerate(classes)} or config.get("label2id")
    config["max_length"] = (decode.get("text") or {}).get("max_length")
    config_path.write_text(json.dumps(config, indent=2))
