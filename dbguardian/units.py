"""Human units for durations (``26h``, ``1h30m``, ``30d``), sizes (``1MB``, ``512KiB``) and moments
(``2026-01-15T12:00:00Z``, ``"2026-01-15 12:00"`` in a given zone).

Sizes follow PostgreSQL's convention: ``kB``/``KB``/``KiB`` = 1024 bytes, ``MB``/``MiB`` = 1024², and so on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """``"26h"``, ``"1h30m"``, ``"90s"``, ``"500ms"``, or a number of seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise ValueError("expected a duration like 26h, 30m, 7d")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=text)
    compact = text.strip().lower().replace(" ", "")
    if not compact:
        raise ValueError("expected a duration like 26h, 30m, 7d")
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        return timedelta(seconds=float(compact))
    position = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(compact):
        raise ValueError(f"{text!r} is not a duration; use a number with a unit: ms, s, m, h, d, w (e.g. 26h)")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest exact rendering that :func:`parse_duration` reads back."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, factor in (("w", 604800000), ("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        amount, total_ms = divmod(total_ms, factor)
        if amount:
            parts.append(f"{amount}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return "".join(parts)


def parse_size(text: str | int) -> int:
    """``"1MB"``, ``"512KiB"``, ``"2.5GB"`` or a number of bytes."""
    if isinstance(text, bool):
        raise ValueError("expected a size like 1MB")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    match = _SIZE.fullmatch(text.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size; use a number with a unit: B, kB, MB, GB, TB (e.g. 1MB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def format_size(size: int) -> str:
    """Readable binary size (``1.5 MiB``); for display only."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_moment(text: str, zone: str) -> datetime:
    """An ISO 8601 time with a zone (``2026-01-15T12:00:00Z``, ``2026-01-15 12:00+01:00``) or without one
    (``2026-01-15 12:00``, ``2026-01-15``), which is taken in ``zone`` (the policy's ``timezone``; a wall
    time that occurs twice when the clocks go back is its first occurrence). Returned in UTC."""
    cleaned = text.strip()
    if cleaned[-1:] in {"Z", "z"}:
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f'{text!r} is not a time; use ISO 8601 (2026-01-15T12:00:00Z) or "2026-01-15 12:00" in the policy\'s zone'
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    # In UTC: a wall time of the repeated hour compares unequal to every other zone's (PEP 495).
    return moment.astimezone(UTC)
