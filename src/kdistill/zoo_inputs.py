"""Input checks the zoos of every backend share, framework-free: a ViT's images and sizes, and a
text model's inputs. A text model's inputs are
tokenized text, int (N, 2, L) — ``x[:, 0]`` the token ids (padding id 0), ``x[:, 1]`` the
attention mask (1 = real token, 0 = padding) — and the data's ``meta`` gives ``vocab_size``.

Token ids are not range-checked per step (that would cost every forward pass): an id outside
``[0, vocab_size)`` is a data bug, and each framework meets it its own way — PyTorch raises an
``IndexError`` (a device-side assert on CUDA), Keras on TensorFlow raises ``InvalidArgumentError``
on the CPU and reads zeros on a GPU, JAX's ``jnp.take`` gives NaN for ids >= ``vocab_size`` (the
training loop's divergence check reports it) and wraps negative ids as numpy indexing does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdistill.errors import KdistillError


def check_token_inputs(model: str, input_shape: Sequence[int], input_dtype: str, vocab_size: int | None) -> None:
    """Token inputs (2, L) of an integer dtype and a ``vocab_size`` for the zoo model ``model``; any
    other shape or dtype, or no ``vocab_size``, is a KdistillError naming the model."""
    if len(input_shape) != 2 or input_shape[0] != 2 or not np.issubdtype(np.dtype(input_dtype), np.integer):
        raise KdistillError(
            f"student/teacher model {model!r} needs tokenized text: int inputs (2, L) = (token ids, attention mask); "
            f"the data gives {input_dtype} {tuple(input_shape)}"
        )
    if vocab_size is None:
        raise KdistillError(f"student/teacher model {model!r} needs vocab_size: the data's meta gives none "
                            "(tokenized text data does); set it in the model's kwargs")


def check_vit_inputs(input_shape: Sequence[int], patch: int, dim: int, heads: int) -> tuple[int, int, int]:
    """The (C, H, W) of images the zoo model ``vit`` can cut into patch×patch tokens with ``heads``
    dividing ``dim``; anything else is a KdistillError naming the argument and the input shape."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise KdistillError(f"student/teacher model 'vit' needs image inputs (C, H, W), the data gives {shape}")
    if patch < 1 or shape[1] % patch or shape[2] % patch:
        raise KdistillError(f"kwargs.patch: model 'vit' needs a patch size that divides the image's height and width; "
                            f"patch={patch} does not divide the inputs {shape}")
    if heads < 1 or dim % heads:
        raise KdistillError(f"kwargs.heads: model 'vit' needs heads dividing dim; heads={heads} does not divide "
                            f"dim={dim} (inputs {shape})")
    return shape
