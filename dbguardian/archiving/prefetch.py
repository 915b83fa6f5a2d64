"""The prefetch queue's fetcher: one long-lived process per ``pg_wal`` that keeps recovery fed.

PostgreSQL's recovery asks restore_command for one file at a time and replays it before it asks for the
next. Downloading in that call (a new process loading the policy, the storage client and the pipeline:
~1 s here) leaves the replay idle for longer than the replay itself takes. Like pgBackRest's
asynchronous archive-get, one fetcher process (``wal-fetch --queue-server``, started by the first
restore_command call that finds none) loads everything once, answers every call over a unix socket in
``pg_wal/.dbguardian-prefetch`` (0700) and, after each requested segment, downloads the next
``prefetch`` segments in the background, ``parallel`` at a time, into that directory. A call that finds
its segment there is a rename: the replay never waits for a download it could have overlapped.

Answers are exact: "0" only for a file in the queue that passed :func:`dbguardian.walfile.check_wal_file`
(the caller checks it again as it moves it), "1" only when every storage answered by a download started
after the request and none has the file (a segment found missing while prefetching is asked again: the
archive may have grown), "126" for anything else. A background download that fails is not reported; the
request for that segment downloads it again and reports its own outcome.

The fetcher exits, removing the segments it holds, when asked (``.stop``, sent after promotion), after
``idle`` seconds without a request, or when its directory disappears. A second fetcher for the same
directory exits at once (an exclusive ``flock`` on ``.lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbguardian.archiving.fetch import TEMP_MARK, WalNotArchived, fetch_from_storages, following, stale_prefetched
from dbguardian.catalog.archive import wal_suffix
from dbguardian.catalog.wal import classify
from dbguardian.errors import DbguardianError, OperationError
from dbguardian.files import private_dirs
from dbguardian.logs import redact_text
from dbguardian.policy import Policy
from dbguardian.storage import Storage, target_storages
from dbguardian.walfile import FAILED, NOT_ARCHIVED, OTHER_OPTIONS, QUEUE_LOCK, QUEUE_SOCKET, STOP_REQUEST, prefetch_dir

DEFAULT_IDLE = 60.0


@dataclass
class _Download:
    task: asyncio.Task[str]
    started: float = field(default_factory=time.monotonic)


class QueueFetcher:
    """The state of one queue: downloads in flight or done, by file name, and recovery's position."""

    def __init__(
        self,
        storages: list[Storage],
        target_name: str,
        suffix: str,
        queue: Path,
        *,
        identity: Path | None,
        prefetch: int,
        parallel: int,
        key: str,
    ) -> None:
        self.key = key
        self.storages = storages
        self.target_name = target_name
        self.suffix = suffix
        self.queue = queue
        self.identity = identity
        self.prefetch = prefetch
        self.slots = asyncio.Semaphore(max(1, parallel))
        self.downloads: dict[str, _Download] = {}
        self.position: str | None = None
        self.last_request = time.monotonic()
        self.answering = 0
        self.stopping = asyncio.Event()

    def idle_for(self) -> float:
        return 0.0 if self.answering else time.monotonic() - self.last_request

    async def _get(self, name: str, *, background: bool) -> str:
        if background:
            async with self.slots:
                return await fetch_from_storages(
                    self.storages, self.target_name, self.suffix, name, self.queue / name, self.identity
                )
        return await fetch_from_storages(
            self.storages, self.target_name, self.suffix, name, self.queue / name, self.identity
        )

    def _start(self, name: str, *, background: bool) -> _Download:
        download = _Download(asyncio.create_task(self._get(name, background=background)))
        # A background failure is only a lost head start: retrieve it so asyncio does not log it.
        download.task.add_done_callback(lambda task: task.cancelled() or task.exception())
        self.downloads[name] = download
        return download

    def _usable(self, name: str, download: _Download | None, asked: float) -> bool:
        """Whether an existing download can answer a request made at ``asked``."""
        if download is None:
            return False
        task = download.task
        if not task.done():
            return True
        if task.cancelled():
            return False
        error = task.exception()
        if error is None:
            return (self.queue / name).is_file()  # served (moved away) already: download it again
        # "Missing" from before the request may be out of date; a failure is retried by the request.
        return False if not isinstance(error, WalNotArchived) else download.started >= asked

    def advance(self, name: str) -> None:
        """Recovery asked for segment ``name``: forget what lies behind it, keep the next ones coming."""
        self.position = name
        for stale in stale_prefetched(list(self.downloads), name):
            download = self.downloads.pop(stale)
            download.task.cancel()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.queue):
                # Temporary files are the downloads' own (each removes its own when it ends).
                if TEMP_MARK not in entry.name and stale_prefetched([entry.name], name):
                    Path(entry.path).unlink(missing_ok=True)
        for ahead in following(name, self.prefetch):
            if ahead in self.downloads and not self.downloads[ahead].task.done():
                continue
            if (self.queue / ahead).is_file():
                continue
            self._start(ahead, background=True)

    async def answer(self, name: str) -> tuple[int, str]:
        asked = time.monotonic()
        self.last_request = asked
        try:
            kind = classify(name).kind
        except ValueError as error:
            return NOT_ARCHIVED, f"{name} is not archived: {error}"
        download = self.downloads.get(name)
        if not self._usable(name, download, asked):
            download = self._start(name, background=False)
        assert download is not None
        if kind == "segment":
            self.advance(name)
        try:
            await asyncio.shield(download.task)
        except WalNotArchived as error:
            return NOT_ARCHIVED, str(error)
        except DbguardianError as error:  # unreachable storage, corrupt object, missing identity
            return FAILED, redact_text(str(error))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug must not read as "not archived"
            return FAILED, f"wal-fetch failed unexpectedly: {error!r}"
        finally:
            if kind != "segment":
                self.downloads.pop(name, None)
        return 0, ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode(errors="replace").strip("\r\n")
            line, _, key = line.partition("\t")
            if line == STOP_REQUEST:
                self.stopping.set()
                code, message = 0, ""
            elif not line or "/" in line:
                code, message = FAILED, f"bad request {line[:60]!r}"
            elif key != self.key:
                code, message = OTHER_OPTIONS, "this queue's fetcher was started with other options"
            else:
                self.answering += 1
                try:
                    code, message = await self.answer(line)
                finally:
                    self.answering -= 1
                    self.last_request = time.monotonic()
            writer.write(f"{code} {message}".strip().replace("\n", " ").encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the caller went away (PostgreSQL stopped): nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def remove_files(self) -> None:
        """Everything this queue holds but the lock: unserved segments and temporary files."""
        for download in self.downloads.values():
            download.task.cancel()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.queue):
                if entry.name != QUEUE_LOCK and entry.name != QUEUE_SOCKET:
                    Path(entry.path).unlink(missing_ok=True)


def _take_lock(queue: Path) -> int | None:
    fd = os.open(queue / QUEUE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _listening_socket(queue: Path) -> tuple[socket.socket, int]:
    """Bind the queue's socket by a relative name (a socket path is limited to 107 bytes)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(queue)
        with contextlib.suppress(FileNotFoundError):
            Path(QUEUE_SOCKET).unlink()  # left by a fetcher that was killed: the lock says none runs
        server.bind(QUEUE_SOCKET)
        inode = Path(QUEUE_SOCKET).stat().st_ino
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    server.listen(16)
    server.setblocking(False)
    return server, inode


async def serve_queue(
    policy: Policy,
    target_name: str,
    dest: Path,
    *,
    identity: Path | None,
    prefetch: int,
    idle: float = DEFAULT_IDLE,
    first: str | None = None,
    key: str = "",
) -> None:
    """Run the fetcher of ``dest``'s queue until stopped, idle or its directory is gone (see module doc).
    ``first``: the file whose request started it; the segments after it are fetched at once."""
    target = policy.target(target_name)
    if target.wal is None:
        raise OperationError(f"target {target_name!r} has no 'wal:' block")
    queue = private_dirs(prefetch_dir(dest))
    lock = _take_lock(queue)
    if lock is None:
        return  # another fetcher serves this queue
    suffix = wal_suffix(target.wal.compression.algorithm, None if target.encryption is None else target.encryption.method)
    fetcher = QueueFetcher(
        target_storages(policy, target_name),
        target_name,
        suffix,
        queue,
        identity=identity,
        prefetch=prefetch,
        parallel=target.wal.parallel,
        key=key,
    )
    listener, inode = _listening_socket(queue)
    server = await asyncio.start_unix_server(fetcher.handle, sock=listener)
    with contextlib.suppress(ValueError):
        if first is not None and classify(first).kind == "segment":
            fetcher.advance(first)
    try:
        while not fetcher.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fetcher.stopping.wait(), timeout=1.0)
            try:
                if (queue / QUEUE_SOCKET).stat().st_ino != inode:
                    break  # the directory was removed (the cluster is gone) or taken over
            except OSError:
                break
            if fetcher.idle_for() > idle:
                break
    finally:
        server.close()
        fetcher.remove_files()
        with contextlib.suppress(OSError):
            if (queue / QUEUE_SOCKET).stat().st_ino == inode:
                (queue / QUEUE_SOCKET).unlink()
        os.close(lock)
