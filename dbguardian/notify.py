"""systemd's notify protocol, spoken directly (one datagram per message to $NOTIFY_SOCKET)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

from dbguardian.logs import get_logger

log = get_logger("dbguardian.notify")


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        if address:
            # A leading "@" names a socket in the abstract namespace.
            self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        if self._address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as error:
            log.warning("sd_notify failed", error=str(error))
            return False
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval() -> float | None:
    """Half of $WATCHDOG_USEC in seconds, if the watchdog is enabled for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


HEARTBEAT_SECONDS = 1.0


async def heartbeat_loop(notifier: Notifier, beat: Callable[[], None]) -> None:
    """Call ``beat`` every second (a stale beat means the event loop is stuck: /readyz says so) and
    ping systemd's watchdog at half its interval, from the same loop, so a stuck loop gets restarted."""
    interval = watchdog_interval()
    next_watchdog = time.monotonic()
    while True:
        beat()
        now = time.monotonic()
        if interval is not None and now >= next_watchdog:
            notifier.send("WATCHDOG=1")
            next_watchdog = now + interval
        await asyncio.sleep(min(HEARTBEAT_SECONDS, interval or HEARTBEAT_SECONDS))
