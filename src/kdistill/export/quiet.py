"""Converters print their progress and warn about things the user did not ask for (a missing
torchvision, a quantizer's pre-processing advice): kept off the console while they run."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside: stdout and stderr go nowhere, Python warnings are ignored and log records up to WARNING are
    dropped; errors still raise (and ERROR records still show)."""
    previous = logging.root.manager.disable
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)
