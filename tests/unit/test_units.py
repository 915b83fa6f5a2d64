from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbguardian.units import format_duration, format_size, parse_duration, parse_size


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
