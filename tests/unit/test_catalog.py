from __future__ import annotations

import asyncio
import builtins
import functools
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from dbguardian.catalog import (
    SAFETY_TIER,
    BaseManifest,
    Catalog,
    LogicalManifest,
    PhysicalManifest,
    StoredObject,
    UnsupportedManifestFormat,
    at_or_before,
    commit_manifest,
    find_leftovers,
    is_backup_id,
    keys,
    latest,
    new_backup_id,
    parse_backup_id,
    read_manifest,
    remove_leftovers,
    select,
)
from dbguardian.catalog.manifest import encode_manifest
from dbguardian.errors import BackupNotFound, StorageError
from dbguardian.storage.base import ObjectInfo
from dbguardian.storage.memory import MemoryStorage
from tests.support.backups import LAYOUT_V1_MANIFEST
from tests.support.storage_spy import SpyStorage

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


# The catalog service, on real in-memory storages (with and without delimiter listing).


def synchronous(test: Callable[..., Coroutine[object, object, None]]) -> Callable[..., None]:
    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


WAL_SEGMENT = "app/wal/00000001/000000010000000000000001.zst"


def logical_manifest(backup_id: str, tier: str = "daily", target: str = "app") -> LogicalManifest:
    old = LogicalManifest.model_validate_json(LAYOUT_V1_MANIFEST.read_bytes())
    started = parse_backup_id(backup_id)
    dump = old.objects["dump"].model_copy(update={"key": keys.dump_key(target, backup_id, ".zst")})
    return old.model_copy(
        update={
            "id": backup_id,
            "target": target,
            "tier": tier,
            "format": 2,
            "started_at": started,
            "finished_at": started + timedelta(minutes=5),
            "objects": {"dump": dump},
        }
    )


def physical_manifest(backup_id: str) -> PhysicalManifest:
    started = parse_backup_id(backup_id)
    common = logical_manifest(backup_id).model_dump(include=set(BaseManifest.model_fields))
    base = StoredObject(key=keys.base_key("app", backup_id, ".zst"), size_bytes=1, sha256="b" * 64, raw_size_bytes=1)
    return PhysicalManifest.model_validate(
        {
            **common,
            "kind": "physical",
            "finished_at": started + timedelta(hours=1),
            "objects": {"base": base},
            "start_lsn": "0/2000028",
            "stop_lsn": "0/3000000",
            "timeline": 1,
            "system_identifier": "1",
            "pg_version": 15,
        }
    )


async def store(storage: MemoryStorage, manifest: BaseManifest) -> None:
    for stored in manifest.objects.values():
        await storage.put_bytes(stored.key, b"x")
    await commit_manifest(storage, manifest)


IDS = {
    "old": new_backup_id(NOW - timedelta(days=3), "0001"),
    "phys": new_backup_id(NOW - timedelta(days=2), "0002"),
    "new": new_backup_id(NOW - timedelta(days=1), "0003"),
    "safety": new_backup_id(NOW - timedelta(hours=1), "0004"),
    "future": new_backup_id(NOW - timedelta(minutes=30), "0005"),
    "pending": new_backup_id(NOW - timedelta(minutes=10), "0006"),
}


async def populated(name: str = "memory") -> MemoryStorage:
    storage = MemoryStorage(name)
    await store(storage, logical_manifest(IDS["old"], "weekly"))
    await store(storage, physical_manifest(IDS["phys"]))
    await store(storage, logical_manifest(IDS["new"]))
    await store(storage, logical_manifest(IDS["safety"], SAFETY_TIER))
    newer = json.loads(encode_manifest(logical_manifest(IDS["future"])))
    await storage.put_bytes(keys.manifest_key("app", IDS["future"]), json.dumps({**newer, "format": 99}).encode())
    await storage.put_bytes(keys.dump_key("app", IDS["pending"], ".zst"), b"in progress")
    await storage.put_bytes(WAL_SEGMENT, b"wal")
    await store(storage, logical_manifest(new_backup_id(NOW, "0007"), target="other"))
    await storage.put_bytes(keys.probe_key("host", "1"), b"probe")
    return storage


@pytest.mark.parametrize("delimiter", [True, False])
@synchronous
async def test_listing_reads_committed_backups_of_every_kind(delimiter: bool) -> None:
    storage = SpyStorage(await populated(), delimiter_listing=delimiter)
    with capture_logs() as logs:
        records = await Catalog([storage]).backups("app")
    assert [r.id for r in records] == [IDS["safety"], IDS["new"], IDS["phys"], IDS["old"]]
    assert [r.manifest.kind for r in records] == ["logical", "logical", "physical", "logical"]
    assert all(r.storages == ["memory"] for r in records)
    refused = [entry for entry in logs if entry["log_level"] == "error"]
    assert [entry["event"] for entry in refused] == ["manifest written by a newer dbguardian ignored"]
    assert "manifest format 99 is newer than this dbguardian understands (≤ 3); upgrade dbguardian" in refused[0]["error"]
    if delimiter:
        assert storage.spy.lists == []  # nothing recursive: the WAL below app/wal/ is never walked
        assert storage.spy.dir_lists == ["app/"]
    else:
        assert storage.spy.lists == ["app/"]
    every = await Catalog([storage]).backups()
    assert {r.target for r in every} == {"app", "other"}


@synchronous
async def test_listing_merges_storages_and_skips_an_unreadable_one() -> None:
    first, second = await populated("a"), MemoryStorage("b")
    await store(second, logical_manifest(IDS["new"]))

    class Broken(MemoryStorage):
        async def list(self, prefix: str = "") -> list[ObjectInfo]:
            raise StorageError("bucket gone")

        async def list_dirs(self, prefix: str) -> builtins.list[str]:
            raise StorageError("bucket gone")

    records = await Catalog([first, second, Broken("c")]).backups("app")
    assert next(r for r in records if r.id == IDS["new"]).storages == ["a", "b"]
    with pytest.raises(StorageError, match="bucket gone"):
        await Catalog([first, Broken("c")]).backups("app", strict=True)


@synchronous
async def test_selection() -> None:
    catalog = Catalog([await populated()])
    assert (await catalog.latest("app")).id == IDS["new"]  # the safety copy is never "latest"
    assert (await catalog.latest("app", kind="physical")).id == IDS["phys"]
    assert (await catalog.by_id("app", IDS["safety"])).tier == SAFETY_TIER
    assert (await catalog.logical("app")).id == IDS["new"]
    assert (await catalog.logical("app", IDS["old"])).manifest.tables
    with pytest.raises(BackupNotFound, match="is a physical backup"):
        await catalog.logical("app", IDS["phys"])
    with pytest.raises(BackupNotFound, match=f"target 'app' has no valid backup '{IDS['pending']}'"):
        await catalog.by_id("app", IDS["pending"])
    with pytest.raises(BackupNotFound, match="target 'nothing' has no valid backup"):
        await catalog.latest("nothing")
    assert [r.id for r in await catalog.logical_backups("app")] == [IDS["safety"], IDS["new"], IDS["old"]]
    assert select(await catalog.logical_backups(), "app", "latest").id == IDS["new"]
    assert await catalog.newest_by_tier("app") == {
        ("app", "weekly"): parse_backup_id(IDS["old"]),
        ("app", "daily"): parse_backup_id(IDS["new"]),
        ("app", SAFETY_TIER): parse_backup_id(IDS["safety"]),
    }


@synchronous
async def test_newest_at_or_before_a_moment() -> None:
    catalog = Catalog([await populated()])
    phys_started = parse_backup_id(IDS["phys"])
    assert (await catalog.at_or_before("app", NOW)).id == IDS["new"]
    assert (await catalog.at_or_before("app", parse_backup_id(IDS["new"]))).id == IDS["new"]  # inclusive
    # The physical backup is consistent only once it finished (an hour after it started).
    assert (await catalog.at_or_before("app", phys_started + timedelta(minutes=30))).id == IDS["old"]
    assert (await catalog.at_or_before("app", phys_started + timedelta(hours=1))).id == IDS["phys"]
    assert (await catalog.at_or_before("app", NOW, kind="physical")).id == IDS["phys"]
    records = await catalog.backups("app")
    assert at_or_before(records, "app", NOW, include_safety=True).id == IDS["safety"]
    with pytest.raises(BackupNotFound, match="has no valid backup from 2026-11-19T11:59:59Z or earlier"):
        await catalog.at_or_before("app", parse_backup_id(IDS["old"]) - timedelta(seconds=1))
    assert latest(records, "app").id == IDS["new"]


@synchronous
async def test_a_direct_read_of_a_newer_manifest_fails_clearly() -> None:
    storage = await populated()
    with pytest.raises(UnsupportedManifestFormat, match=r"manifest format 99 is newer than this dbguardian understands"):
        await read_manifest(storage, "app", IDS["future"])
    assert (await read_manifest(storage, "app", IDS["new"])).id == IDS["new"]


@pytest.mark.parametrize("delimiter", [True, False])
@synchronous
async def test_leftovers_never_touch_wal(delimiter: bool) -> None:
    storage = SpyStorage(await populated(), delimiter_listing=delimiter)
    removed = await remove_leftovers(storage, "app", datetime.now(UTC) + timedelta(days=1), timedelta(hours=6))
    assert removed == [keys.dump_key("app", IDS["pending"], ".zst")]
    # The folder with a newer-format manifest is committed (by a newer version), not a leftover.
    assert await storage.get_bytes(WAL_SEGMENT) == b"wal"
    if delimiter:  # every backup id starts with "2": one listing of "app/2", never of "app/" or one per folder
        assert storage.spy.lists == ["app/2"]
    else:
        assert storage.spy.lists == ["app/"]
    objects = [info(WAL_SEGMENT, timedelta(days=30)), info("app/wal/00000001/x", timedelta(days=30))]
    assert find_leftovers(objects, NOW, timedelta(hours=1)) == []


@synchronous
async def test_the_latest_logical_backup_is_found_when_a_physical_one_is_newer() -> None:
    storage = MemoryStorage("local")
    await store(storage, logical_manifest(IDS["old"]))
    await store(storage, physical_manifest(IDS["new"]))
    catalog = Catalog([storage])
    assert (await catalog.latest("app")).id == IDS["new"]  # of any kind
    assert (await catalog.logical("app")).id == IDS["old"]  # what restore and drills take
    with pytest.raises(BackupNotFound, match="is a physical backup, not a pg_dump one"):
        await catalog.logical("app", IDS["new"])


@synchronous
async def test_a_committed_manifest_is_never_replaced_where_the_store_can_refuse() -> None:
    storage = MemoryStorage("local")  # declares conditional put
    manifest = logical_manifest(IDS["old"])
    await store(storage, manifest)
    await commit_manifest(storage, manifest)  # the same bytes again (a retried request): fine
    other = manifest.model_copy(update={"tier": "weekly"})
    with pytest.raises(StorageError, match="another manifest already holds this backup id"):
        await commit_manifest(storage, other)
    assert (await Catalog([storage]).by_id("app", IDS["old"])).tier == "daily"
