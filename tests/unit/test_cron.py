"""Cron parsing and fire times, including daylight-saving changes (pure, table-tested)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.cron import next_fire, parse_cron


def fires(expression: str, start: str, zone: str, count: int) -> list[str]:
    cron = parse_cron(expression)
    tz = ZoneInfo(zone)
    moment = datetime.fromisoformat(start)
    found = []
    for _ in range(count):
        fire = next_fire(cron, moment, tz)
        found.append(fire.isoformat())
        moment = fire.astimezone(UTC) + timedelta(microseconds=1)
    return found


@pytest.mark.parametrize(
    ("expression", "start", "zone", "expected"),
    [
        ("0 2 * * *", "2026-11-22T05:00:00+00:00", "UTC", ["2026-11-23T02:00:00+00:00", "2026-11-24T02:00:00+00:00"]),
        ("0 2 * * *", "2026-11-23T02:00:00+00:00", "UTC", ["2026-11-23T02:00:00+00:00", "2026-11-24T02:00:00+00:00"]),
        ("*/15 * * * *", "2026-01-01T00:07:30+00:00", "UTC", ["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00"]),
        ("0 3 * * 0", "2026-11-22T05:00:00+00:00", "UTC", ["2026-11-29T03:00:00+00:00", "2026-12-06T03:00:00+00:00"]),
        ("0 3 * * sun", "2026-11-22T05:00:00+00:00", "UTC", ["2026-11-29T03:00:00+00:00", "2026-12-06T03:00:00+00:00"]),
        ("0 3 * * 7", "2026-11-22T05:00:00+00:00", "UTC", ["2026-11-29T03:00:00+00:00", "2026-12-06T03:00:00+00:00"]),
        ("0 4 1 * *", "2026-11-22T05:00:00+00:00", "UTC", ["2026-12-01T04:00:00+00:00", "2027-01-01T04:00:00+00:00"]),
        ("0 6 2 * *", "2026-11-22T05:00:00+00:00", "UTC", ["2026-12-02T06:00:00+00:00", "2027-01-02T06:00:00+00:00"]),
        ("0 0 29 feb *", "2026-01-01T00:00:00+00:00", "UTC", ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
        # Both day fields restricted: either selects the day (the 13th, or any Friday).
        ("0 12 13 * fri", "2026-11-01T00:00:00+00:00", "UTC",
         ["2026-11-06T12:00:00+00:00", "2026-11-13T12:00:00+00:00", "2026-11-20T12:00:00+00:00"]),
        ("30 1-3/2 * * mon-fri", "2026-11-20T00:00:00+00:00", "UTC",
         ["2026-11-20T01:30:00+00:00", "2026-11-20T03:30:00+00:00", "2026-11-23T01:30:00+00:00"]),
        # Read in the policy's time zone.
        ("0 2 * * *", "2026-07-01T12:00:00+00:00", "America/New_York",
         ["2026-07-02T02:00:00-04:00", "2026-07-03T02:00:00-04:00"]),
        # DST, spring forward (Europe/Berlin 2026-03-29: 02:00 -> 03:00): the skipped 02:30 runs at 03:00.
        ("30 2 * * *", "2026-03-28T12:00:00+00:00", "Europe/Berlin",
         ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
        # DST, fall back (2026-10-25: 03:00 -> 02:00): a daily 02:30 runs once, at the first 02:30.
        ("30 2 * * *", "2026-10-24T12:00:00+00:00", "Europe/Berlin",
         ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
        # ...while an hourly job keeps its hourly rhythm through the repeated hour.
        ("30 * * * *", "2026-10-24T23:45:00+00:00", "Europe/Berlin",
         ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:30:00+01:00"]),
        # US spring forward (2026-03-08 02:00 -> 03:00 in New York).
        ("15 2 * * *", "2026-03-07T12:00:00+00:00", "America/New_York",
         ["2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00"]),
    ],
)  # fmt: skip
def test_fire_times(expression: str, start: str, zone: str, expected: list[str]) -> None:
    assert fires(expression, start, zone, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * *", "expected 5 fields"),
        ("0 2 * * * *", "expected 5 fields"),
        ("60 2 * * *", "minute: 60 is outside 0-59"),
        ("0 24 * * *", "hour: 24 is outside 0-23"),
        ("0 0 0 * *", "day of month: 0 is outside 1-31"),
        ("0 0 * 13 *", "month: 13 is outside 1-12"),
        ("0 0 * * 8", "day of week: 8 is outside 0-7"),
        ("0 0 * * xyz", "day of week: 'xyz' is not a number"),
        ("*/0 * * * *", "minute: step '0' must be a positive number"),
        ("5-1 * * * *", "minute: range '5-1' runs backwards"),
        ("1,,2 * * * *", "minute: empty list item"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_invalid_expressions(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cron(expression)


ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["0 2 * * *", "*/7 * * * *", "30 * * * *", "15 1-4 * * *", "0 0 1 * *", "45 23 * * 6"]),
    st.sampled_from(ZONES),
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
)
def test_fire_times_are_increasing_and_at_or_after_start(expression: str, zone: str, start: datetime) -> None:
    cron = parse_cron(expression)
    tz = ZoneInfo(zone)
    previous = start
    for _ in range(5):
        fire = next_fire(cron, previous, tz)
        assert fire >= previous
        assert fire - previous <= timedelta(days=32)
        assert fire.astimezone(UTC).second == 0
        previous = fire.astimezone(UTC) + timedelta(microseconds=1)
