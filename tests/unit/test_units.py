from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbguardian.units import format_duration, format_size, parse_duration, parse_moment, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("26h", 26 * 3600),
        ("30d", 30 * 86400),
        ("1h30m", 5400),
        ("90s", 90),
        ("500ms", 0.5),
        ("2w", 14 * 86400),
        ("1.5h", 5400),
        ("45", 45),
        (" 10 m ", 600),
        (60, 60),
    ],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "26x", "1h-30m", "abc", "26hh", "-5s", "1h 2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1MB", 1048576),
        ("1mb", 1048576),
        ("512KiB", 524288),
        ("2.5GB", int(2.5 * 1024**3)),
        ("10", 10),
        ("7B", 7),
        (3, 3),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MB", "1XB", "1 M B", "-1MB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=10**12))
def test_duration_round_trip(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["B", "kB", "KiB", "MB", "MiB", "GB", "TB"]),
)
def test_size_units_scale(amount: int, unit: str) -> None:
    factor = {"B": 1, "kB": 1024, "KiB": 1024, "MB": 1024**2, "MiB": 1024**2, "GB": 1024**3, "TB": 1024**4}[unit]
    assert parse_size(f"{amount}{unit}") == amount * factor


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 * 1024**3) == "3.0 GiB"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-15T12:00:00Z", datetime(2026, 1, 15, 12, 0, tzinfo=UTC)),
        ("2026-01-15 12:00+01:00", datetime(2026, 1, 15, 11, 0, tzinfo=UTC)),
        ("2026-01-15 12:00", datetime(2026, 1, 15, 11, 0, tzinfo=UTC)),  # Berlin, winter: +01:00
        ("2026-07-15 12:00", datetime(2026, 7, 15, 10, 0, tzinfo=UTC)),  # summer: +02:00
        ("2026-01-15", datetime(2026, 1, 14, 23, 0, tzinfo=UTC)),
        (" 2026-01-15T12:00:00.250z ", datetime(2026, 1, 15, 12, 0, 0, 250000, tzinfo=UTC)),
        ("2026-10-25 02:30", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # twice that night: the first (+02:00)
    ],
)
def test_parse_moment_takes_zoneless_times_in_the_given_zone(text: str, expected: datetime) -> None:
    moment = parse_moment(text, "Europe/Berlin")
    assert moment == expected and moment.tzinfo is UTC


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01 00:00", "12:00", "2026-01-15 25:00"])
def test_parse_moment_refuses_what_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_moment(text, "UTC")


def test_a_dsn_from_the_command_line_never_carries_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbguardian.errors import UsageError
    from dbguardian.postgres import connection_info_from_dsn

    monkeypatch.setenv("PGPASSWORD", "from-env")
    info = connection_info_from_dsn("postgresql://restorer@db2:6543/app")
    assert (info.password, info.database) == ("from-env", "app")
    assert info.libpq_env()["PGHOST"] == "db2" and info.libpq_env()["PGPORT"] == "6543"
    (tmp_path / "pw").write_text("from-file\n")
    assert connection_info_from_dsn("postgresql://restorer@db2/app", tmp_path / "pw").password == "from-file"
    with pytest.raises(UsageError, match="must not contain a password") as refused:
        connection_info_from_dsn("postgresql://restorer:hunter2@db2/app")
    assert "hunter2" not in str(refused.value)
    for bad in ("db2:5432/app", "mysql://u@db2/app", "postgresql:///app"):
        with pytest.raises(UsageError, match="postgresql:// URL with a host"):
            connection_info_from_dsn(bad)
    with pytest.raises(UsageError, match="cannot read password file"):
        connection_info_from_dsn("postgresql://restorer@db2/app", tmp_path / "missing")
