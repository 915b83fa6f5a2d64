"""The WAL spool: the local directory where PostgreSQL's finished WAL files wait for the WAL shipper.

:func:`push` is what ``dbguardian wal-push`` (PostgreSQL's ``archive_command``) does: copy one file into
the spool so that it survives a crash of the machine once PostgreSQL has been told "archived", and
never replace a file already there with different bytes (overwriting WAL would silently corrupt the
archive). Kept free of the daemon's imports: ``archive_command`` runs once per 16 MB segment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO

from dbguardian.errors import OperationError
from dbguardian.files import fsync_dir, open_private, private_dirs

CHUNK = 1024 * 1024

# What PostgreSQL hands to archive_command: segments, timeline history files, backup history files
# (segment.startoffset.backup) and partial segments left at a timeline switch.
_WAL_FILE = re.compile(r"[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history")


class SpoolError(OperationError):
    """A WAL file could not be put into the spool (PostgreSQL keeps it and retries)."""


class WalConflict(SpoolError):
    """A different file of the same name is already in the spool."""


def is_wal_file_name(name: str) -> bool:
    return _WAL_FILE.fullmatch(name) is not None


def push(source: Path, spool: Path) -> bool:
    """Copy ``source`` durably into ``spool``; True when copied, False when an identical copy was there.

    The copy goes to a private temp file that is fsynced and then hard-linked to its final name:
    ``link`` fails when the name exists, so of two concurrent pushes only one can place its bytes.
    """
    name = source.name
    if not is_wal_file_name(name):
        raise SpoolError(f"{name!r} is not the name of a WAL file (segment, .history, .backup or .partial)")
    final = spool / name
    try:
        with open(source, "rb") as src:
            _make_spool(spool)
            if final.exists():
                _check_same(src, final)
                fsync_dir(spool)  # the earlier push may have died before its directory fsync
                return False
            temp = spool / f".{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
            try:
                with open_private(temp, "wb", exclusive=True) as out:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                try:
                    os.link(temp, final)
                    placed = True
                except FileExistsError:  # a concurrent push of the same name won the race
                    with open(temp, "rb") as ours:
                        _check_same(ours, final)
                    placed = False
            finally:
                temp.unlink(missing_ok=True)
            fsync_dir(spool)
            return placed
    except OSError as error:
        raise SpoolError(f"cannot copy {source} into the spool {spool}: {error.strerror or error}") from None


def _check_same(ours: IO[bytes], final: Path) -> None:
    """Raise :class:`WalConflict` unless ``final`` holds exactly the bytes of ``ours`` (read from the start)."""
    ours.seek(0)
    with open(final, "rb") as theirs:
        if os.fstat(ours.fileno()).st_size == os.fstat(theirs.fileno()).st_size:
            while True:
                a, b = ours.read(CHUNK), theirs.read(CHUNK)
                if a != b:
                    break
                if not a:
                    return
    raise WalConflict(f"{final.name} is already in the spool with different content; refusing to overwrite WAL ({final})")


def _make_spool(spool: Path) -> None:
    """Create the spool (0700) if missing, with its new directory entries on disk like the files in it."""
    missing = [directory for directory in (spool, *spool.parents) if not directory.is_dir()]
    if missing:
        private_dirs(spool)
        for directory in missing:
            fsync_dir(directory.parent)
