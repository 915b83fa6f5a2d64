"""The catalog on real S3 (moto over HTTP): backups are found through a delimiter listing, so WAL
stored under ``<target>/wal/`` is never walked by listing, selection or leftover clean-up."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from dbguardian.catalog import keys
from dbguardian.catalog.leftovers import remove_leftovers
from dbguardian.catalog.service import Catalog
from dbguardian.storage.s3.storage import S3Storage
from tests.storage.conftest import S3Factory
from tests.support.backups import put_backup
from tests.support.storage_spy import SpyStorage


async def put_s3_backup(storage: S3Storage, started: datetime, entropy: str, *, commit: bool = True) -> str:
    backup_id = keys.new_backup_id(started, entropy)
    await put_backup(storage, backup_id, b"dump " + entropy.encode(), commit=commit)
    return backup_id


def test_listing_and_leftovers_never_walk_wal(make_s3: S3Factory) -> None:
    s3 = make_s3()
    now = datetime.now(UTC)

    async def scenario() -> None:
        older = await put_s3_backup(s3, now - timedelta(days=2), "0001")
        newer = await put_s3_backup(s3, now - timedelta(days=1), "0002")
        pending = await put_s3_backup(s3, now - timedelta(days=1, hours=1), "0003", commit=False)
        segments = [f"{n:08X}{0:08X}{n:08X}" for n in range(1, 4)]
        for segment in segments:
            await s3.put_bytes(keys.wal_key("app", segment, ".zst"), b"wal")
        spy = SpyStorage(s3)
        assert spy.capabilities.delimiter_listing

        records = await Catalog([spy]).backups("app")
        assert [r.id for r in records] == [newer, older]
        assert (await Catalog([spy]).latest("app")).id == newer
        assert spy.spy.lists == [] and spy.spy.dir_lists == ["app/", "app/"]

        removed = await remove_leftovers(spy, "app", now + timedelta(days=1), timedelta(hours=6))
        assert removed == [keys.dump_key("app", pending, ".zst")]
        assert "app/" not in spy.spy.lists and not any(prefix.startswith("app/wal") for prefix in spy.spy.lists)
        assert sorted(info.key for info in await s3.list(keys.wal_prefix("app"))) == [
            keys.wal_key("app", segment, ".zst") for segment in segments
        ]

    asyncio.run(scenario())
