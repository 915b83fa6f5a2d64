from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbguardian.catalog import find_leftovers, is_backup_id, new_backup_id, parse_backup_id
from dbguardian.storage.base import ObjectInfo

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(moments, moments)
def test_ids_sort_by_time(first: datetime, second: datetime) -> None:
    a, b = new_backup_id(first), new_backup_id(second)
    if first < second:
        assert a < b
    elif first > second:
        assert a > b


@given(moments)
def test_id_round_trips_to_its_time(moment: datetime) -> None:
    backup_id = new_backup_id(moment)
    assert is_backup_id(backup_id)
    assert parse_backup_id(backup_id) == moment


def test_same_moment_gives_distinct_ids() -> None:
    moment = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    ids = {new_backup_id(moment) for _ in range(50)}
    assert len(ids) > 40  # 16 bits of randomness; a rare repeat is possible, many are not
    assert all(parse_backup_id(i) == moment for i in ids)


def test_local_times_are_converted_to_utc() -> None:
    from zoneinfo import ZoneInfo

    berlin = datetime(2026, 7, 1, 4, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert new_backup_id(berlin, "abcd") == "20260701T020000.000000Z-abcd"


@pytest.mark.parametrize("text", ["", "20261122T020000Z", "20261122T020000.123456Z-XYZ1", "../etc"])
def test_not_ids(text: str) -> None:
    assert not is_backup_id(text)


NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def info(key: str, age: timedelta) -> ObjectInfo:
    return ObjectInfo(key=key, size=1, modified=NOW - age)


def test_leftovers_only_without_manifest_and_idle_past_grace() -> None:
    old = new_backup_id(NOW - timedelta(hours=10), "0001")
    old_committed = new_backup_id(NOW - timedelta(hours=9), "0002")
    young = new_backup_id(NOW - timedelta(minutes=5), "0003")
    old_but_active = new_backup_id(NOW - timedelta(hours=8), "0004")
    objects = [
        info(f"app/{old}/dump.pgc.zst", timedelta(hours=10)),
        info(f"app/{old}/.dump.pgc.zst.tmp-1-ab", timedelta(hours=10)),
        info(f"app/{old_committed}/dump.pgc.zst", timedelta(hours=9)),
        info(f"app/{old_committed}/manifest.json", timedelta(hours=9)),
        info(f"app/{young}/.dump.pgc.zst.tmp-2-cd", timedelta(minutes=1)),
        info(f"app/{old_but_active}/.dump.pgc.zst.tmp-3-ef", timedelta(seconds=30)),
        info("app/not-an-id/file", timedelta(days=30)),
    ]
    assert find_leftovers(objects, NOW, timedelta(hours=6)) == [
        f"app/{old}/.dump.pgc.zst.tmp-1-ab",
        f"app/{old}/dump.pgc.zst",
    ]
    assert find_leftovers(objects, NOW, timedelta(hours=12)) == []
