"""Cron parsing and fire times, including daylight-saving changes (pure, table-tested)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
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


FIRE_TIMES = [
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
    # An hourly job's skipped 02:30 also runs when the clocks jump, then the rhythm resumes.
    ("30 * * * *", "2026-03-29T00:00:00+00:00", "Europe/Berlin",
     ["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]),
    # Half-hour shifts (Lord Howe Island: 02:00 -> 02:30 in October, 02:00 -> 01:30 in April).
    ("0 * * * *", "2026-10-03T14:00:00+00:00", "Australia/Lord_Howe",
     ["2026-10-04T01:00:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T03:00:00+11:00"]),
    ("45 1 * * *", "2026-04-04T12:00:00+00:00", "Australia/Lord_Howe",
     ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]),
    # A job on some hours (not every hour) runs a repeated time once.
    ("15 1-4 * * *", "2026-11-01T04:00:00+00:00", "America/New_York",
     ["2026-11-01T01:15:00-04:00", "2026-11-01T02:15:00-05:00", "2026-11-01T03:15:00-05:00",
      "2026-11-01T04:15:00-05:00"]),
    # Fall back at midnight (Santiago: Sunday 00:00 -> Saturday 23:00): Saturday's 23:45 runs once.
    ("45 23 * * 6", "2026-04-04T12:00:00+00:00", "America/Santiago",
     ["2026-04-04T23:45:00-03:00", "2026-04-11T23:45:00-04:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("expression", "start", "zone", "expected"), FIRE_TIMES)
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


# --- The same tables against croniter ------------------------------------------------------------------------------
# dbguardian.cron keeps its own evaluator because croniter 7 differs on daylight-saving changes (its module docstring
# lists how). These tests keep the comparison reproducible: croniter must give the tables' times except where it is
# recorded to differ, and there exactly what is recorded, so they fail as soon as croniter changes either way.

# The cron fire times tests/unit/test_schedule.py relies on (plan output and catch-up), as fire-time rows.
SCHEDULE_FIRE_TIMES = [
    ("0 2 * * *", "2026-11-22T12:00:00+00:00", "UTC", ["2026-11-23T02:00:00+00:00", "2026-11-24T02:00:00+00:00"]),
    ("0 2 * * *", "2026-11-19T12:00:00+00:00", "UTC", ["2026-11-20T02:00:00+00:00"]),
    ("0 3 * * 0", "2026-11-16T03:00:00+00:00", "UTC", ["2026-11-22T03:00:00+00:00"]),
    ("0 3 * * 0", "2026-11-22T03:00:01+00:00", "UTC", ["2026-11-29T03:00:00+00:00"]),
    ("0 2 * * *", "2026-11-22T00:30:00+00:00", "Europe/Berlin", ["2026-11-22T02:00:00+01:00"]),
    ("0 2 * * *", "2026-11-22T01:30:00+00:00", "Europe/Berlin", ["2026-11-23T02:00:00+01:00"]),
    ("0 0 * * 1", "2026-11-01T03:00:00+00:00", "America/New_York",
     ["2026-11-02T00:00:00-05:00", "2026-11-09T00:00:00-05:00"]),
    ("0 2 1 * *", "2026-11-22T12:00:00+00:00", "Asia/Kolkata", ["2026-12-01T02:00:00+05:30", "2027-01-01T02:00:00+05:30"]),
]  # fmt: skip

# Where croniter 7.0 differs: (expression, start, zone) -> croniter's fire times.
CRONITER_DIFFERS: dict[tuple[str, str, str], list[str]] = {
    # A repeated local time runs twice, daily jobs too (ours: once, unless the job runs every hour).
    ("30 2 * * *", "2026-10-24T12:00:00+00:00", "Europe/Berlin"):
        ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"],
    ("45 1 * * *", "2026-04-04T12:00:00+00:00", "Australia/Lord_Howe"):
        ["2026-04-05T01:45:00+11:00", "2026-04-05T01:45:00+10:30"],
    ("15 1-4 * * *", "2026-11-01T04:00:00+00:00", "America/New_York"):
        ["2026-11-01T01:15:00-04:00", "2026-11-01T01:15:00-05:00", "2026-11-01T02:15:00-05:00",
         "2026-11-01T03:15:00-05:00"],
    ("45 23 * * 6", "2026-04-04T12:00:00+00:00", "America/Santiago"):
        ["2026-04-04T23:45:00-03:00", "2026-04-04T23:45:00-04:00"],
    # A job whose hour field is * skips a time the clocks jump over (ours: runs it at the jump).
    ("30 * * * *", "2026-03-29T00:00:00+00:00", "Europe/Berlin"):
        ["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-29T04:30:00+02:00"],
    ("0 * * * *", "2026-10-03T14:00:00+00:00", "Australia/Lord_Howe"):
        ["2026-10-04T01:00:00+10:30", "2026-10-04T03:00:00+11:00", "2026-10-04T04:00:00+11:00"],
}  # fmt: skip


@pytest.mark.parametrize(("expression", "start", "zone", "expected"), SCHEDULE_FIRE_TIMES)
def test_schedule_fire_times(expression: str, start: str, zone: str, expected: list[str]) -> None:
    assert fires(expression, start, zone, len(expected)) == expected


def croniter_fires(expression: str, start: str, zone: str, count: int) -> list[str]:
    """``fires`` through croniter, called as ``next_fire`` would call it (the first time at or after a moment)."""
    tz = ZoneInfo(zone)
    moment = datetime.fromisoformat(start)
    found = []
    for _ in range(count):
        # croniter answers strictly after its start: start 1 µs early. Step back in UTC, since arithmetic on a local
        # time drops its fold (which of a repeated hour's two occurrences it is).
        begin = (moment.astimezone(UTC) - timedelta(microseconds=1)).astimezone(tz)
        fire = croniter(expression, begin).get_next(datetime)
        found.append(fire.isoformat())
        moment = fire.astimezone(UTC) + timedelta(microseconds=1)
    return found


@pytest.mark.parametrize(("expression", "start", "zone", "expected"), FIRE_TIMES + SCHEDULE_FIRE_TIMES)
def test_croniter_against_the_tables(expression: str, start: str, zone: str, expected: list[str]) -> None:
    expected = CRONITER_DIFFERS.get((expression, start, zone), expected)
    assert croniter_fires(expression, start, zone, len(expected)) == expected


def test_every_recorded_difference_is_a_table_row() -> None:
    rows = {(expression, start, zone): expected for expression, start, zone, expected in FIRE_TIMES}
    for key, theirs in CRONITER_DIFFERS.items():
        assert key in rows and rows[key] != theirs


@pytest.mark.parametrize(
    "expression",
    [
        "0 2 * * * *",  # a sixth field (croniter: seconds)
        "0 2 * * * * *",  # a seventh (croniter: year)
        "5-1 * * * *",  # croniter: a range that wraps around
        "0 0 30 2 *",  # croniter fails only when asked for a fire time ("failed to find next date")
        "@daily",
        "0 0 L * *",
        "0 0 * * 5#3",
    ],
)
def test_croniter_accepts_what_we_refuse(expression: str) -> None:
    assert croniter.is_valid(expression)
    with pytest.raises(ValueError):
        parse_cron(expression)
