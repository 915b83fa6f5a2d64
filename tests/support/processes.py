"""A server program in the background for the tests and benches: started in its own process group with
its output in a log file, waited for until it answers, stopped on exit (SIGTERM to the group, SIGKILL
after 20 s). The storage emulators (SeaweedFS, fake-gcs-server, Azurite, moto's server) all use it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def background(
    argv: list[str], *, log: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running with stdout and stderr in ``log``; its whole process group is stopped on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=None if env is None else dict(env),
            start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until_up(
    process: subprocess.Popen[bytes], answers: Callable[[], object], *, what: str, log: Path, timeout: float,
    interval: float = 0.2,
) -> None:  # fmt: skip
    """Call ``answers`` until it returns something other than False without raising (not listening yet,
    503 while starting up); raises with the tail of ``log`` if the program exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if answers() is not False:
                return
        except Exception:  # noqa: S110 - any failure to answer means "not up yet"
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(interval)
