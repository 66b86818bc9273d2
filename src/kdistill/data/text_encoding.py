"""How raw text becomes a model's input (recipe ``data.text``), applied when a batch is read.

- **Hashed n-grams** (the default, for zoo models that read feature vectors): scikit-learn's
  ``HashingVectorizer``, l2-normalised counts of word n-grams, float32 ``(features,)`` per text.
- **A tokenizer** (``data.text.tokenizer``: a pretrained model's short name such as ``minilm-l6``,
  its folder, or a ``tokenizer.json``), read by the framework-neutral ``tokenizers`` library: every
  text truncated and padded to ``max_length`` tokens, int32 ``(2, max_length)`` per text — row 0
  the token ids, row 1 the attention mask (1 for a real token, 0 for padding). Every framework's
  text models read this one layout (a transformer as its ``input_ids`` and ``attention_mask``), and
  the data's ``meta["vocab_size"]`` sizes their embeddings.

Both are stateless, so a split read in any order, by any worker, gives the same inputs; what
identifies the encoding (the tokenizer file's sha256) is part of the data's fingerprint.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from kdistill.errors import KdistillError, reading
from kdistill.pretrained import model_file, model_folder
from kdistill.recipe import TextConfig

IDS, MASK = 0, 1  # the rows of a tokenized text


class TextEncoding:
    """``encoding(texts)`` → one input row per text; ``sample_shape``, ``dtype``, the ``settings``
    that identify it (fingerprint, report) and the ``meta`` models are built from."""

    def __init__(self, config: TextConfig):
        self.config = config
        if config.tokenizer is None:
            self.sample_shape, self.dtype = (config.features,), np.dtype(np.float32)
            self.settings, self.meta, self.tokenizer = {"text": config.model_dump(mode="json")}, {}, None
            return
        path = tokenizer_file(config.tokenizer)
        from tokenizers import Tokenizer

        with reading(path, "a tokenizers tokenizer.json", field="data.text.tokenizer", also=(Exception,)):
            tokenizer = Tokenizer.from_file(str(path))
        pad = tokenizer.padding or {}
        pad_id = pad.get("pad_id", tokenizer.token_to_id("[PAD]") or 0)
        tokenizer.enable_truncation(max_length=config.max_length)
        tokenizer.enable_padding(length=config.max_length, pad_id=pad_id, pad_token=pad.get("pad_token", "[PAD]"))
        self.tokenizer = tokenizer
        self.sample_shape, self.dtype = (2, config.max_length), np.dtype(np.int32)
        self.settings = {"text": {"tokenizer": config.tokenizer, "sha256": _sha256(path), "max_length": config.max_length}}
        self.meta = {"vocab_size": tokenizer.get_vocab_size(), "pad_id": pad_id}

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(len(texts), *sample_shape) of ``dtype``."""
        if self.tokenizer is None:
            from sklearn.feature_extraction.text import HashingVectorizer

            config = self.config
            vectorizer = HashingVectorizer(n_features=config.features, ngram_range=tuple(config.ngrams),
                                           lowercase=config.lowercase, alternate_sign=False, norm="l2", dtype=np.float32)
            return vectorizer.transform(texts).toarray()
        batch = np.empty((len(texts), *self.sample_shape), np.int32)
        for row, encoded in enumerate(self.tokenizer.encode_batch(texts)):
            batch[row, IDS], batch[row, MASK] = encoded.ids, encoded.attention_mask
        return batch


@functools.lru_cache(maxsize=8)
def _encoding(config_json: str) -> TextEncoding:
    return TextEncoding(TextConfig.model_validate_json(config_json))


def text_encoding(config: TextConfig) -> TextEncoding:
    """The encoding of ``config``, made once per setting (a tokenizer is read from disk once)."""
    return _encoding(config.model_dump_json())


def tokenizer_file(name_or_path: str) -> Path:
    """The ``tokenizer.json`` of a pretrained model's name or folder, or the file itself."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    return model_file(model_folder(name_or_path, "data.text.tokenizer"), "tokenizer.json", "data.text.tokenizer")


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise KdistillError(f"data.text.tokenizer: cannot read {str(path)!r}: {error.strerror}") from None
