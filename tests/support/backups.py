"""Backups made by hand on a storage, from the stored layout-v1 fixture (a real manifest of the code
before the kind-aware catalog), for catalog, health and storage tests that need committed backups."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dbguardian.catalog import LogicalManifest, StoredObject, commit_manifest, keys
from dbguardian.catalog.manifest import PhysicalManifest
from dbguardian.storage.base import Storage

LAYOUT_V1 = Path(__file__).parents[1] / "fixtures" / "layout-v1"
LAYOUT_V1_MANIFEST = LAYOUT_V1 / "app" / "20261129T233345.263703Z-6b8c" / "manifest.json"


def fixture_manifest() -> LogicalManifest:
    return LogicalManifest.model_validate_json(LAYOUT_V1_MANIFEST.read_bytes())


async def put_backup(
    storage: Storage, backup_id: str, data: bytes, *, commit: bool = True, **fields: Any
) -> LogicalManifest:
    """A logical backup of target ``app`` whose dump holds ``data``, committed unless ``commit`` is False."""
    stored = StoredObject(key=keys.dump_key("app", backup_id, ".zst"), size_bytes=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), raw_size_bytes=len(data))  # fmt: skip
    await storage.put_bytes(stored.key, data)
    started = keys.parse_backup_id(backup_id)
    manifest = fixture_manifest().model_copy(
        update={"id": backup_id, "format": 2, "started_at": started, "finished_at": started,
                "objects": {"dump": stored}, "storage": [storage.name], **fields}
    )  # fmt: skip
    if commit:
        await commit_manifest(storage, manifest)
    return manifest


async def put_base_backup(storage: Storage, backup_id: str, start_lsn: str, stop_lsn: str, *, tier: str = "base",
                          timeline: int = 1) -> PhysicalManifest:  # fmt: skip
    """A committed physical backup of target ``app`` (its tar object holds a few bytes)."""
    data = b"base backup " + backup_id.encode()
    stored = StoredObject(key=keys.base_key("app", backup_id, ".zst"), size_bytes=len(data),
                          sha256=hashlib.sha256(data).hexdigest(), raw_size_bytes=len(data))  # fmt: skip
    await storage.put_bytes(stored.key, data)
    started = keys.parse_backup_id(backup_id)
    manifest = PhysicalManifest.model_validate({
        "format": 2, "kind": "physical", "id": backup_id, "target": "app", "tier": tier, "database": "app",
        "server_version": "15.10", "dbguardian_version": "test", "host": "test", "started_at": started,
        "finished_at": started, "duration_seconds": 1, "raw_size_bytes": len(data), "size_bytes": len(data),
        "sha256": stored.sha256, "compression": {"algorithm": "zstd", "level": 3}, "encryption": None,
        "storage": [storage.name], "objects": {"base": stored}, "start_lsn": start_lsn, "stop_lsn": stop_lsn,
        "timeline": timeline, "system_identifier": "7000000000000000001", "pg_version": 15,
    })  # fmt: skip
    await commit_manifest(storage, manifest)
    return manifest


async def put_wal(storage: Storage, *names: str, suffix: str = ".zst") -> None:
    """WAL objects of target ``app`` (a few bytes each: prune and listings never read them)."""
    for name in names:
        await storage.put_bytes(keys.wal_key("app", name, suffix), b"wal " + name.encode())
