"""Owner-only files and folders: everything derived from notes, or holding weights, is created
readable by its owner alone, before any byte goes in (a file that already exists with a looser
mode is tightened first, since `os.open`'s mode applies only when it creates the file).

Imports nothing heavy, so the TF-free modules (export, checkpoints) can use it too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_dir(path: str | os.PathLike) -> Path:
    """Creates `path` (and missing parents) and makes it owner-only; mkdir's mode alone is
    filtered by the umask and leaves an existing folder as it was."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def open_file(path: str | os.PathLike, mode: str = "wb") -> IO:
    """`open(path, mode)` for writing, truncating, with the file owner-only from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    except BaseException:
        os.close(fd)
        raise


def create_file(path: str | os.PathLike) -> None:
    """An empty owner-only file, for writers (TFRecord) that then open it by name."""
    open_file(path).close()


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Within it (also as a decorator), every file and folder the process creates, by any
    writer (TensorBoard, Orbax and tensorstore threads, transformers' save_pretrained), is
    owner-only from its creation, so a killed run leaves nothing readable by others. The umask
    is process-wide: it is restored on exit."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def restrict_tree(root: str | os.PathLike) -> None:
    """Makes a written tree owner-only after the fact, for writers (Orbax, tensorstore) that
    create their files with the process umask, when the caller did not hold `private_umask`."""
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, DIR_MODE)
        for filename in filenames:
            os.chmod(os.path.join(dirpath, filename), FILE_MODE)
