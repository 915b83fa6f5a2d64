"""The catalog on real S3 (moto over HTTP): backups are found through a delimiter listing, so WAL
stored under ``<target>/wal/`` is never walked by listing, selection or leftover clean-up."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dbguardian.catalog import keys
from dbguardian.catalog.leftovers import remove_leftovers
from dbguardian.catalog.manifest import LogicalManifest, StoredObject
from dbguardian.catalog.service import Catalog, commit_manifest
from dbguardian.storage.s3.storage import S3Storage
from tests.storage.conftest import S3Factory
from tests.support.storage_spy import SpyStorage

FIXTURE = Path(__file__).parents[1] / "fixtures/layout-v1/app/20261129T233345.263703Z-6b8c/manifest.json"


async def put_backup(storage: S3Storage, started: datetime, entropy: str, *, commit: bool = True) -> str:
    backup_id = keys.new_backup_id(started, entropy)
    data = b"dump " + entropy.encode()
    stored = StoredObject(key=keys.dump_key("app", backup_id, ".zst"), size_bytes=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), raw_size_bytes=len(data))  # fmt: skip
    await storage.put_bytes(stored.key, data)
    if commit:
        manifest = LogicalManifest.model_validate_json(FIXTURE.read_bytes()).model_copy(
            update={"id": backup_id, "format": 2, "started_at": started, "finished_at": started,
                    "objects": {"dump": stored}, "storage": [storage.name]}
        )  # fmt: skip
        await commit_manifest(storage, manifest)
    return backup_id


def test_listing_and_leftovers_never_walk_wal(make_s3: S3Factory) -> None:
    s3 = make_s3()
    now = datetime.now(UTC)

    async def scenario() -> None:
        older = await put_backup(s3, now - timedelta(days=2), "0001")
        newer = await put_backup(s3, now - timedelta(days=1), "0002")
        pending = await put_backup(s3, now - timedelta(days=1, hours=1), "0003", commit=False)
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
