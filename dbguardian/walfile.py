"""WAL file checks and the prefetch queue's client side, kept to ``os``, ``socket`` and ``struct``.

PostgreSQL runs ``restore_command`` once per 16 MB segment and waits for it before it replays the next;
most calls of a replay are answered by the prefetch queue's fetcher (:mod:`dbguardian.archiving.prefetch`)
and for those the process must not pay for the policy, the storage clients and the pipeline (~0.5 s),
nor for pathlib, re and typing (~0.02 s, paid again for every segment). So the check of a segment's
first page, the queue's protocol and the move of a prefetched copy into place live here, in a
bottom-layer module like :mod:`dbguardian.spool`, and ``dbguardian.archiving.fetch`` uses the same
functions. The segment arithmetic is the few lines of ``catalog.wal`` it needs (importing the catalog
package loads pydantic); ``tests/unit/test_ship.py`` checks both agree.
"""

from __future__ import annotations

import os
import struct

from dbguardian.errors import PipelineError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing alone costs ~10 ms of every call
if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

PREFETCH_DIR = ".dbguardian-prefetch"
_HEX = frozenset("0123456789ABCDEF")

# XLogLongPageHeaderData (little-endian): xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64,
# xlp_rem_len u32, padding to 24, xlp_sysid u64, xlp_seg_size u32, xlp_xlog_blcksz u32.
LONG_HEADER = struct.Struct("<HHIQI4xQII")
XLP_LONG_HEADER = 0x0002


def _segment_parts(name: str) -> tuple[int, int] | None:
    """(log, seg) of a segment or ``.partial`` segment name; None for other names."""
    base = name[:-8] if name.endswith(".partial") else name
    if len(base) != 24 or not _HEX.issuperset(base):
        return None
    return int(base[8:16], 16), int(base[16:24], 16)


def _valid_segment_size(size: int) -> bool:
    return 1 << 20 <= size <= 1 << 30 and not size & (size - 1)


def segment_start(name: str, segment_size: int) -> int | None:
    """The LSN a segment (or ``.partial``) named ``name`` starts at; None for other archive files."""
    parts = _segment_parts(name)
    if parts is None:
        return None
    per_log = 0x100000000 // segment_size
    return (parts[0] * per_log + parts[1]) * segment_size


def check_wal_file(name: str, head: bytes, size: int) -> None:
    """Raise PipelineError unless ``head`` (the first bytes) and ``size`` fit the WAL file ``name``.

    Segments (and ``.partial`` segments) are checked against their first page's long header; ``.history``
    and ``.backup`` files are text of any length.
    """
    if _segment_parts(name) is None:
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


def _queue_of(dest: str | os.PathLike[str]) -> str:
    return os.path.join(os.path.dirname(os.fspath(dest)), PREFETCH_DIR)


def serve_prefetched(name: str, dest: str | os.PathLike[str]) -> bool:
    """Move a prefetched copy of ``name`` to ``dest`` after checking it again; False when there is none
    (or it fails the check: it is removed and the caller downloads the file).

    No fsync here: PostgreSQL renames what restore_command wrote durably itself (fsync of the file and
    of pg_wal, ``KeepFileRestoredFromArchive``), and a crash before that replays from the archive again.
    """
    cached = os.path.join(_queue_of(dest), name)
    try:
        with open(cached, "rb") as handle:
            head = handle.read(LONG_HEADER.size)
            size = os.fstat(handle.fileno()).st_size
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        check_wal_file(name, head, size)
    except PipelineError:
        try:
            os.unlink(cached)
        except OSError:
            pass
        return False
    os.replace(cached, dest)
    return True


# The prefetch queue: one long-lived fetcher per pg_wal (``wal-fetch --queue-server``, in
# dbguardian.archiving.prefetch) keeps the next segments downloaded while recovery replays; each
# restore_command call asks it over a unix socket in the queue directory and moves the answer into place.
# Protocol: one request line per connection, the file name, a tab and the queue key (the options the
# caller would start a fetcher with); one reply line: "0" (the file is in the queue, checked),
# "1 <message>" (no storage has it), "126 <message>" (it could not be fetched), "3 <message>" (this
# fetcher was started with other options: the caller fetches the file itself).
QUEUE_SOCKET = ".socket"
QUEUE_LOCK = ".lock"
STOP_REQUEST = ".stop"
NOT_ARCHIVED = 1
OTHER_OPTIONS = 3
FAILED = 126
_REPLY_LIMIT = 4096


def _queue_exchange(queue: str, line: str, wait: float) -> tuple[int, str] | None:
    """Send one request to the queue's fetcher; its reply, or None when no fetcher listens there."""
    # The C module: socket.py's enums and selectors would add ~8 ms to every restore_command call.
    import _socket

    client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        client.settimeout(wait)
        try:
            # A relative name from inside the directory: a socket path is limited to 107 bytes.
            cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.chdir(queue)
                client.connect(QUEUE_SOCKET)
            finally:
                os.fchdir(cwd)
                os.close(cwd)
        except OSError:
            return None
        try:
            client.sendall(line.encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n") and len(reply) < _REPLY_LIMIT:
                piece = client.recv(_REPLY_LIMIT)
                if not piece:
                    break
                reply += piece
        except OSError:
            return None
    finally:
        client.close()
    code, _, message = reply.decode(errors="replace").strip().partition(" ")
    if code not in {"0", str(NOT_ARCHIVED), str(OTHER_OPTIONS), str(FAILED)}:
        return None  # the fetcher died mid-answer
    return int(code), message


def _start_fetcher(queue: str, spawn: list[str]) -> subprocess.Popen[bytes] | None:
    import subprocess

    try:
        try:
            os.mkdir(queue, 0o700)
        except FileExistsError:
            pass
        return subprocess.Popen(
            spawn,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives this call; PostgreSQL waits for this process only
        )
    except OSError:
        return None


def fetch_from_queue(name: str, dest: str, key: str, spawn: list[str], *, wait: float = 600.0) -> tuple[int, str] | None:
    """Ask the queue's fetcher for ``name`` (starting ``spawn`` when none listens) and move the answer to
    ``dest``. Returns (0, "") when ``dest`` holds the file, (1 or 126, why) when it cannot, and None when
    the queue cannot answer (no fetcher came up, or its file failed the check): then the caller fetches
    the file itself and reports its own errors.
    """
    if name == "00000001.history":  # asked for at the end of every recovery; timeline 1 never has one
        return NOT_ARCHIVED, f"{name} is not archived: timeline 1 has no history file"
    queue = _queue_of(dest)
    request = f"{name}\t{key}"
    reply = _queue_exchange(queue, request, wait)
    if reply is None:
        fetcher = _start_fetcher(queue, spawn)
        if serve_prefetched(name, dest):  # left by a fetcher that has exited: the new one goes on from here
            return 0, ""
        if fetcher is None:
            return None
        import time

        deadline = time.monotonic() + 60
        pause = 0.005
        while reply is None and time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            reply = _queue_exchange(queue, request, wait)
            # It exits at once when another fetcher holds the queue (then that one answers), or on error.
            if reply is None and fetcher.poll() not in (None, 0):
                return None
    if reply is None:
        return None
    code, message = reply
    if code == 0:
        return (0, "") if serve_prefetched(name, dest) else None
    return None if code == OTHER_OPTIONS else (code, message)


def stop_queue(pg_wal: str | os.PathLike[str]) -> None:
    """Ask the fetcher of ``pg_wal``'s queue (if one runs) to remove its files and exit."""
    _queue_exchange(os.path.join(os.fspath(pg_wal), PREFETCH_DIR), STOP_REQUEST, 5.0)
