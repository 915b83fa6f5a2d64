"""5-field cron expressions (minute hour day-of-month month day-of-week), evaluated in a time zone.

Pure functions, table-tested. Daylight-saving rules follow classic cron: a local time that does not
exist (the hour skipped in spring) fires once at the moment the clocks jump; a local time that
occurs twice (the hour repeated in autumn) fires once, at its first occurrence, except for a job
that runs every hour, which keeps its rhythm through the repeated hour.

Why not croniter: croniter 7.0 was run against the same tables (tests/unit/test_cron.py runs them
against it and pins the differences below, so a croniter release that changes them is noticed).
It agrees on plain fields, names, steps, ranges, the day-of-month OR day-of-week rule, time zones
and a fixed-time job in the spring gap, but:

- a repeated local time fires twice, daily jobs too: ``30 2 * * *`` in Europe/Berlin on 2026-10-25
  fires at 02:30+02:00 and again at 02:30+01:00 (ours: once; next run 2026-10-26 02:30+01:00).
  Same for ``45 1 * * *`` on Lord Howe Island (half-hour shift), ``15 1-4 * * *`` in New York
  (01:15 twice) and ``45 23 * * 6`` in Santiago (clocks go back at midnight: Saturday 23:45 twice).
  For a backup or a drill that is a second full run.
- a job whose hour field is ``*`` skips a time the clocks jump over: ``30 * * * *`` in Berlin on
  2026-03-29 fires 01:30, 03:30 (ours: 01:30, 03:00, 03:30); ``0 * * * *`` on Lord Howe Island
  (02:00 -> 02:30) fires 01:00, 03:00 (ours: 01:00, 02:30, 03:00).
- it accepts what the policy refuses and would need a second validator: 6 and 7 fields (seconds,
  year), ``@daily``, ``L``, ``#``, ``?``, ``5-1`` (a range that wraps around); ``0 0 30 2 *``
  (never fires) is refused only when asked for a fire time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_MONTHS = {name: index for index, name in enumerate(_MONTH_NAMES, 1)}
_DAYS = {name: index for index, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SEARCH_DAYS = 366 * 8  # long enough for "29 2 *" (every leap year) to be found


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_restricted: bool
    weekday_restricted: bool

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return in_month or in_week  # classic cron: either restriction selects the day
        return in_month and in_week


def _value(text: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{field}: {number} is outside {low}-{high}")
    return number


def _parse_field(text: str, low: int, high: int, names: dict[str, int], field: str) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{field}: empty list item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, low, high, names, field), _value(last, low, high, names, field)
            if start > end:
                raise ValueError(f"{field}: range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, field)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> Cron:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    parsed = [
        _parse_field(text, low, high, names, name) for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True)
    ]
    weekdays = {day % 7 for day in parsed[4]}  # 7 is Sunday too
    cron = Cron(
        expression=expression,
        minutes=tuple(sorted(parsed[0])),
        hours=tuple(sorted(parsed[1])),
        days=frozenset(parsed[2]),
        months=frozenset(parsed[3]),
        weekdays=frozenset(weekdays),
        day_restricted=not fields[2].startswith("*"),
        weekday_restricted=not fields[4].startswith("*"),
    )
    if not any(cron.matches_day(date(2024, 1, 1) + timedelta(days=offset)) for offset in range(366 * 4)):
        raise ValueError(f"{expression!r} never fires (no such day)")
    return cron


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    # Through UTC: astimezone() to the same tzinfo returns the datetime unnormalised.
    return moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None)


def _instants(naive: datetime, zone: ZoneInfo, every_hour: bool) -> list[datetime]:
    """The instants a wall-clock time means.

    Normally one. A time skipped by a clock change means the instant the clocks jump. A time that
    occurs twice means its first occurrence, and for jobs that run every hour also the second (so an
    hourly job keeps running through the repeated hour, a daily one does not run twice).
    """
    # Instants are returned in UTC: aware datetimes sharing one tzinfo compare by wall time, ignoring fold.
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _wall(first, zone) == naive:
        second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
        return [first, second] if every_hour and second != first else [first]
    moment = naive.replace(tzinfo=zone, fold=1).astimezone(UTC).replace(second=0, microsecond=0)
    while _wall(moment, zone) <= naive:
        moment += timedelta(minutes=1)
    return [moment]


def next_fire(cron: Cron, after: datetime, zone: ZoneInfo) -> datetime:
    """The first fire time at or after ``after`` (an aware datetime), as an aware datetime in ``zone``."""
    after = after.astimezone(UTC)
    start = _wall(after, zone).replace(second=0, microsecond=0) - timedelta(hours=3)  # clock changes
    every_hour = len(cron.hours) == 24
    day = start.date()
    for _ in range(_SEARCH_DAYS):
        if cron.matches_day(day):
            candidates = [
                instant
                for hour in cron.hours
                for minute in cron.minutes
                if (naive := datetime.combine(day, time(hour, minute))) >= start
                for instant in _instants(naive, zone, every_hour)
                if instant >= after
            ]
            if candidates:
                return min(candidates).astimezone(zone)
        day += timedelta(days=1)
    raise ValueError(f"{cron.expression!r} does not fire within {_SEARCH_DAYS} days")
