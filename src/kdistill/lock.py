"""One writer per output directory: while ``kdistill run`` writes ``OUT`` (or ``kdistill cache``
writes ``--store``) it holds an exclusive lock on ``DIR/.kdistill.lock``, taken without waiting,
so a second writer is refused at once instead of mixing its files with the first one's.

The lock is an ``fcntl.flock`` on the lock file, which the kernel releases when the holder dies;
the file holds the holder's pid and is removed when the lock is released (a file left by a killed
run is taken over by the next one). Where ``fcntl`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from kdistill.errors import KdistillError, writing

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".kdistill.lock"


def _absent_directories(directory: Path) -> list[Path]:
    """The directories ``mkdir(parents=True)`` of ``directory`` would create, outermost first."""
    absent = []
    while not directory.exists() and directory != directory.parent:
        absent.append(directory)
        directory = directory.parent
    return absent[::-1]


def _holder(fd: int) -> str:
    """Who holds the lock, from the pid its holder wrote into the file."""
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def _take(lock: Path, option: str, directory: Path, writer: str) -> int:
    """Open and lock ``lock`` without waiting; returns the file descriptor. A lock file removed by
    its previous holder between our open and our lock is opened again."""
    while True:
        with writing(lock, "the lock file", field=option):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise KdistillError(f"{option} {directory}: another {writer} is writing it (lock {lock} held by {holder}); "
                                "wait for it or pick another directory") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def exclusive(directory: Path, option: str, writer: str = "kdistill run") -> Iterator[None]:
    """Hold the lock of ``directory`` for the block, creating the directory (and its parents) if
    absent. On exit the lock file is removed and the lock released; directories created here are
    removed again if nothing was written into them. ``option`` (``--out``, ``--store``) and
    ``writer`` name the directory and its other writer in the refusal."""
    absent = _absent_directories(directory)
    with writing(directory, "the output directory", field=option):
        directory.mkdir(parents=True, exist_ok=True)
    fd = None
    try:
        if fcntl is not None:
            lock = directory / LOCK_NAME
            fd = _take(lock, option, directory, writer)
            with writing(lock, "the lock file", field=option):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        if fd is not None:
            (directory / LOCK_NAME).unlink(missing_ok=True)  # while still held: no one takes a removed file
            os.close(fd)
        for created in reversed(absent):  # only empty ones: nothing written is removed
            try:
                created.rmdir()
            except OSError:
                break
