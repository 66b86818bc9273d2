"""The one exception type users see: a bad recipe, bad data, a bad model or a diverged run, and
the one place that turns the errors of reading a user's file into it (:func:`reading`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class KdistillError(Exception):
    """A problem with the user's input or run, reported without a traceback by the CLI (exit code 2)."""


class TrainingDiverged(KdistillError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint is kept."""

    def __init__(self, role: str, epoch: int, step: int, parts: dict[str, float], checkpoint: str | None):
        self.role, self.epoch, self.step, self.parts, self.checkpoint = role, epoch, step, parts, checkpoint
        shown = ", ".join(f"{name}={value:.4g}" for name, value in parts.items())
        kept = f"last good checkpoint kept at {checkpoint}" if checkpoint else "no checkpoint had been written yet"
        super().__init__(
            f"{role}: loss is not finite at epoch {epoch}, step {step} ({shown}); training stopped, {kept}"
        )


def _format_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "this file's bytes are not what was expected": numpy's ValueError
    (and its subclasses json.JSONDecodeError and UnicodeDecodeError), truncated streams, a bad zip
    (``.npz``) or compressed stream, bad YAML, a file that is not safetensors, a short binary header. Imported when one
    is being caught, so importing this module imports nothing."""
    import struct
    import zipfile
    import zlib

    import yaml
    from safetensors import SafetensorError

    return ValueError, EOFError, zipfile.BadZipFile, zlib.error, yaml.YAMLError, SafetensorError, struct.error


def _explain(error: BaseException) -> str:
    text = (error.strerror if isinstance(error, OSError) and error.strerror else str(error)).strip()
    system = re.search(r"I/O error: (.+?) \(os error \d+\)", text)  # safetensors' wording of an OSError
    text = system.group(1) if system else text
    text = text or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "…"


@contextmanager
def reading(path: str | os.PathLike, what: str, *, field: str | None = None, hint: str | None = None,
            also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Read a user's file inside this block: an I/O error or a format error becomes one
    KdistillError that names ``field`` (if given), the file and ``what`` it should be, e.g.
    ``data.path: /d/x.npz: not a numpy .npz file (File is not a zip file)`` or
    ``data.path: /d/x.npz: cannot be read (Permission denied); expected a numpy .npz file``.

    ``what`` reads after "not": "a numeric CSV", "a safetensors shard". ``also``: further exception
    types that mean a bad format here; ``hint``: what the user can do, appended."""
    prefix = f"{field}: " if field else ""
    tail = f"; {hint}" if hint else ""
    try:
        yield
    except KdistillError:
        raise
    except OSError as error:
        if error.errno is None:  # no system error behind it: a format complaint (e.g. gzip's BadGzipFile)
            raise KdistillError(f"{prefix}{path}: not {what} ({_explain(error)}){tail}") from None
        raise KdistillError(f"{prefix}{path}: cannot be read ({_explain(error)}); expected {what}{tail}") from None
    except (*_format_errors(), *also) as error:
        raise KdistillError(f"{prefix}{path}: not {what} ({_explain(error)}){tail}") from None


def _write_errors() -> tuple[type[BaseException], ...]:
    """What a failed write raises: an OSError, or safetensors' own error for one (its writer
    reports a full disk as ``SafetensorError: Error while serializing: I/O error: ...``)."""
    from safetensors import SafetensorError

    return OSError, SafetensorError


class WriteRefused(KdistillError):
    """A write the file system refused (``errno`` ``code``: a full disk, a read-only mount, ...),
    naming the file that was being written."""

    def __init__(self, message: str, path: Path, code: int | None):
        super().__init__(message)
        self.path, self.code = path, code


@contextmanager
def writing(path: str | os.PathLike, what: str, *, field: str | None = None) -> Iterator[None]:
    """Write a user's file or directory inside this block: an OSError (no space left, permission
    denied, a file where a directory should be), or safetensors' error for one, becomes a
    :class:`WriteRefused` naming ``field``, the path and ``what`` was being written, e.g.
    ``/s/shard-00001.safetensors: cannot write this file (No space left on device)``."""
    prefix = f"{field}: " if field else ""
    try:
        yield
    except KdistillError:
        raise
    except _write_errors() as error:
        code = error.errno if isinstance(error, OSError) else None
        if code is None and (found := re.search(r"\(os error (\d+)\)", str(error))):
            code = int(found.group(1))
        raise WriteRefused(f"{prefix}{path}: cannot write {what} ({_explain(error)})", Path(path), code) from None
