"""Progress of a long transfer: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time

from dbguardian.logs import get_logger
from dbguardian.units import format_size

log = get_logger("dbguardian.progress")


class Progress:
    def __init__(self, label: str, total: int | None, *, interval: float = 10.0, tty: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._interval = interval
        self._tty = sys.stderr.isatty() if tty is None else tty
        self._started = time.monotonic()
        self._last = self._started

    def advance(self, amount: int) -> None:
        self.done += amount
        now = time.monotonic()
        if self._tty and now - self._last >= 0.2:
            self._last = now
            self._draw(now)
        elif not self._tty and now - self._last >= self._interval:
            self._last = now
            log.info(
                "progress",
                operation=self.label,
                bytes=self.done,
                total_bytes=self.total,
                percent=round(100 * self.done / self.total, 1) if self.total else None,
                mib_per_s=round(self.done / 1048576 / max(now - self._started, 1e-6), 1),
            )

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._started, 1e-6)
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            text = f"\r{self.label} [{bar:<30}] {fraction:6.1%} {format_size(self.done)}/{format_size(self.total)}"
        else:
            text = f"\r{self.label} {format_size(self.done)}"
        sys.stderr.write(f"{text} {format_size(int(rate))}/s ")
        sys.stderr.flush()

    def finish(self) -> None:
        if self._tty:
            self._draw(time.monotonic())
            sys.stderr.write("\n")
            sys.stderr.flush()
