"""WAL file checks and the prefetch hand-over of ``wal-fetch``, kept to the standard library.

PostgreSQL runs ``restore_command`` once per 16 MB segment; most calls during a replay find their file
already prefetched, and for those the process must not pay for the policy, the storage clients and
the pipeline (that import alone is ~0.5 s, more than a replay spends on the segment). So the check of a
segment's first page and the move of a prefetched copy into place live here, in a bottom-layer module
like :mod:`dbguardian.spool`, and ``dbguardian.archiving.fetch`` uses the same functions. The segment
arithmetic is the few lines of ``catalog.wal`` it needs (importing the catalog package loads pydantic);
``tests/unit/test_ship.py`` checks both agree.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from pathlib import Path

from dbguardian.errors import PipelineError

PREFETCH_DIR = ".dbguardian-prefetch"

# XLogLongPageHeaderData (little-endian): xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64,
# xlp_rem_len u32, padding to 24, xlp_sysid u64, xlp_seg_size u32, xlp_xlog_blcksz u32.
LONG_HEADER = struct.Struct("<HHIQI4xQII")
XLP_LONG_HEADER = 0x0002
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?$")


def _valid_segment_size(size: int) -> bool:
    return 1 << 20 <= size <= 1 << 30 and not size & (size - 1)


def segment_start(name: str, segment_size: int) -> int | None:
    """The LSN a segment (or ``.partial``) named ``name`` starts at; None for other archive files."""
    match = _SEGMENT.match(name)
    if match is None:
        return None
    per_log = 0x100000000 // segment_size
    number = int(match.group(2), 16) * per_log + int(match.group(3), 16)
    return number * segment_size


def check_wal_file(name: str, head: bytes, size: int) -> None:
    """Raise PipelineError unless ``head`` (the first bytes) and ``size`` fit the WAL file ``name``.

    Segments (and ``.partial`` segments) are checked against their first page's long header; ``.history``
    and ``.backup`` files are text of any length.
    """
    if _SEGMENT.match(name) is None:
        return
    if len(head) < LONG_HEADER.size:
        raise PipelineError(f"{name}: {size} bytes is no WAL segment")
    _magic, info, _tli, pageaddr, _rem, _sysid, seg_size, _blcksz = LONG_HEADER.unpack_from(head)
    if not info & XLP_LONG_HEADER:
        raise PipelineError(f"{name}: the first page has no long header; this is not the start of a WAL segment")
    if not _valid_segment_size(seg_size):
        raise PipelineError(f"{name}: the header's segment size {seg_size} is invalid; not a WAL segment")
    if size != seg_size:
        raise PipelineError(f"{name}: {size} bytes, a segment of this cluster is {seg_size}; the file is truncated")
    expected = segment_start(name, seg_size)
    if pageaddr != expected:
        raise PipelineError(
            f"{name}: the first page is at {pageaddr:#x}, the name says {expected:#x}; the object holds another segment"
        )


def prefetch_dir(dest: Path) -> Path:
    return dest.parent / PREFETCH_DIR


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def serve_prefetched(name: str, dest: Path) -> bool:
    """Move a prefetched copy of ``name`` to ``dest`` after checking it again; False when there is none
    (or it fails the check: it is removed and the caller downloads the file)."""
    cached = prefetch_dir(dest) / name
    try:
        with open(cached, "rb") as handle:
            head = handle.read(LONG_HEADER.size)
            size = os.fstat(handle.fileno()).st_size
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        check_wal_file(name, head, size)
    except PipelineError:
        with contextlib.suppress(OSError):
            cached.unlink()
        return False
    cached.replace(dest)
    fsync_dir(dest.parent)
    return True
