"""The one wrapper for every external program (pg_dump, pg_restore, pg_dumpall, ...).

Programs get an argument list (never a shell) and their secrets through the environment. Their
stderr goes to the log line by line, redacted; lines that report errors are kept so the failure
message can name the cause. Leaving the ``async with`` block early (an exception, a cancellation)
kills the child's whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import signal
import struct
import termios
import threading
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

from dbguardian.errors import ToolError
from dbguardian.logs import get_logger, redact_text

log = get_logger("dbguardian.process")

PIPE_LIMIT = 1024 * 1024
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), named there only on Python 3.10+ builds that know it
F_GETPIPE_SZ = 1032
QUEUE_CHUNKS = 2
FILL_STEP = 0.0005
FILL_STEPS = 20
"""How the stdout reader lets the pipe fill before a read: up to 20 naps of 0.5 ms (see ``_wait_for_fill``)."""
STDIN_BUFFER = 1024 * 1024
"""What ``write()`` may leave buffered for the program before it waits (2 MiB: +5 MB RSS, no faster)."""
ERROR_MARKERS = ("error:", "fatal:", "panic:", "could not", "failed")


def _widen_pipe(fd: int) -> None:
    """Make the pipe ``fd`` holds ``PIPE_LIMIT`` bytes; best effort: the limit is /proc/sys/fs/pipe-max-size."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_LIMIT)


def _pipe_bytes(fd: int) -> int:
    """How many bytes the pipe ``fd`` holds now (FIONREAD)."""
    count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return count


def _wait_for_fill(fd: int, want: int, poller: select.poll) -> None:
    """Nap until the pipe ``fd`` holds ``want`` bytes, its writer has closed it, or ``FILL_STEPS`` naps passed.

    pg_dump writes 4-8 kB at a time. A reader blocked on an empty pipe wakes for every one of those
    writes and, in Python, takes the GIL back for each: 250,000 wake-ups and GIL handovers per GB,
    competing with the thread that compresses. Reading once the pipe holds half a chunk makes that a
    few thousand, and measured 0.4 CPU-s less per GB dumped (bench/README.md, issue 14). A slow
    program costs a few polls per chunk and at most 10 ms of delay.
    """
    for _ in range(FILL_STEPS):
        if _pipe_bytes(fd) >= want:
            return
        if any(events & select.POLLHUP for _, events in poller.poll(0)):
            return  # the writer is gone: what the pipe holds is all there will be
        time.sleep(FILL_STEP)


class Child:
    """A running program; use as ``async with Child(argv, ...) as child:``."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bool = False,
        stdout: bool = True,
        stdout_path: str | None = None,
    ) -> None:
        self.argv = argv
        self.name = os.path.basename(argv[0])
        self._env = {**os.environ, **(env or {})}
        self._want_stdin = stdin
        self._want_stdout = stdout
        self._stdout_path = stdout_path
        self._process: asyncio.subprocess.Process | None = None
        self._stdout_fd: int | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.error_lines: list[str] = []
        self.stderr_lines: list[str] = []

    @property
    def process(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError("child not started")
        return self._process

    async def __aenter__(self) -> Child:
        # stdout is a plain pipe read by a thread (see stdout_chunks), not an asyncio stream.
        stdout: int = asyncio.subprocess.DEVNULL
        if self._want_stdout:
            self._stdout_fd, stdout = os.pipe()
            # A 1 MB pipe instead of 64 kB: the program blocks, and the reader thread wakes, 16x less often.
            _widen_pipe(stdout)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE if self._want_stdin else asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                limit=PIPE_LIMIT,
                # Its own process group: a terminal's Ctrl-C reaches dbguardian, which then stops it cleanly.
                start_new_session=True,
            )
        except OSError as error:
            self._close_stdout()
            raise ToolError(f"cannot start {self.name}: {error.strerror}") from None
        finally:
            if self._want_stdout:
                os.close(stdout)  # the child holds the write end now
        if self._want_stdin:
            self._widen_stdin()
        log.debug("started", program=self.name, pid=self._process.pid, argv=self.argv)
        self._stderr_task = asyncio.create_task(self._pump_stderr())
        return self

    def _widen_stdin(self) -> None:
        """A 1 MiB pipe and a write buffer of ``STDIN_BUFFER`` in front of the program's stdin.

        With asyncio's defaults (a 64 kB pipe, ``drain()`` waiting until the buffer is under 64 kB)
        each 1 MiB chunk was handed over only once the program had read nearly all of the previous
        one, so it sat idle while the next chunk was decompressed: a streamed restore of 1.6 GB took
        15.4 s where ``zstd -dc | pg_restore`` took 9.3 s; with a chunk's worth in the pipe and one
        in the buffer both run at once (10.3 s against 9.3-9.9 s).
        """
        assert self._process is not None and self._process.stdin is not None
        transport = self._process.stdin.transport
        pipe = transport.get_extra_info("pipe")
        if pipe is not None:
            _widen_pipe(pipe.fileno())
        assert isinstance(transport, asyncio.WriteTransport)
        transport.set_write_buffer_limits(high=STDIN_BUFFER)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._process is not None and self._process.returncode is None:
            self.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._process.wait())
        if self._stderr_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), timeout=5)
        self._close_stdout()

    def _close_stdout(self) -> None:
        if self._stdout_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdout_fd)
            self._stdout_fd = None

    def kill(self) -> None:
        if self._process is None or self._process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        log.warning("killed", program=self.name, pid=self._process.pid)

    async def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = redact_text(raw.decode(errors="replace").rstrip())
            if not line:
                continue
            self.stderr_lines.append(line)
            if any(marker in line.lower() for marker in ERROR_MARKERS):
                self.error_lines.append(line)
                log.error("program stderr", program=self.name, line=line)
            else:
                log.info("program stderr", program=self.name, line=line)

    async def stdout_chunks(self, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The program's output in chunks of at most ``size`` bytes (usually more than half of it; a slow
        program's may be shorter).

        A thread does the reads: pg_dump writes 8 kB at a time, and waking the event loop for each of
        them costs more than the rest of the pipeline. Whole chunks come through a
        queue of at most ``QUEUE_CHUNKS``, so a slow consumer blocks the program (backpressure).
        """
        assert self._stdout_fd is not None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        slots = threading.Semaphore(QUEUE_CHUNKS)  # chunks read but not yet taken: the memory bound
        stop = threading.Event()
        fd = self._stdout_fd

        def deliver(item: bytes | BaseException | None) -> bool:
            while not slots.acquire(timeout=0.2):
                if stop.is_set():
                    return False
            loop.call_soon_threadsafe(queue.put_nowait, item)
            return True

        def reader() -> None:
            # One os.read per chunk, once the pipe holds at least half of one (_wait_for_fill): each
            # chunk is one bytes object straight from the pipe, between size/2 and size bytes long
            # (no growing buffer and no join: either would briefly double a chunk, and churn the
            # allocator). Child closes fd.
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            try:
                # Half a chunk, or half the pipe if it could not be widened: a full pipe blocks the writer.
                want = min(size, fcntl.fcntl(fd, F_GETPIPE_SZ)) // 2
                while not stop.is_set():
                    _wait_for_fill(fd, want, poller)
                    data = os.read(fd, size)
                    if not data:
                        break
                    if not deliver(data):
                        return
                    del data  # not kept alive while the next chunk is read
                deliver(None)
            except OSError as error:
                deliver(error)

        thread = threading.Thread(target=reader, name=f"{self.name}-stdout", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                slots.release()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise ToolError(f"reading the output of {self.name} failed: {item}")
                yield item
                del item  # the consumer asked for the next one: not kept alive while it is awaited
        finally:
            stop.set()

    async def write(self, chunk: bytes) -> bool:
        """Feed stdin; False once the program closed its input (it stopped reading)."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(chunk)
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.process.stdin.close()
            await self.process.stdin.wait_closed()

    async def wait_checked(self, *, fail_on_error_lines: bool = True) -> None:
        """Wait for exit; raise :class:`ToolError` on a non-zero exit or an error reported on stderr."""
        code = await self.process.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        if code != 0 or (fail_on_error_lines and self.error_lines):
            reason = (
                self.error_lines[-1] if self.error_lines else (self.stderr_lines[-1] if self.stderr_lines else "no message")
            )
            how = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
            raise ToolError(f"{self.name} {how}: {reason}")
