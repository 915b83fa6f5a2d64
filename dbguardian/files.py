"""Files and directories private to the service user, whatever the umask of the shell or cron job
that started dbguardian: files are created 0600 and directories 0700 (``mkdir``'s and ``open``'s modes
go through the umask, so both are set explicitly after creation). Used for local backups and for
everything under ``state_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dirs(path: Path) -> Path:
    """Create ``path`` and its missing parents as 0700 directories (existing ones are left as they are)."""
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made meanwhile by someone else: theirs
        directory.chmod(PRIVATE_DIR)  # mkdir's mode went through the umask
    return path


def open_private(path: Path, mode: str = "w", *, exclusive: bool = False) -> IO[Any]:
    """Open ``path`` for writing (``"w"``, ``"a"``, ``"wb"``, ``"ab"``); a new file is created 0600."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    if exclusive:
        flags |= os.O_EXCL
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # the umask may have removed bits from a new file's mode
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def fsync_path(path: str | os.PathLike[str], *, directory: bool = False) -> None:
    """fsync a file, or a directory (``directory=True``: makes the names created or renamed in it durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fsync_path(path, directory=True)
