"""Backups made by hand on a storage, from the stored layout-v1 fixture (a real manifest of the code
before the kind-aware catalog), for catalog, health and storage tests that need committed backups."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dbguardian.catalog import LogicalManifest, StoredObject, commit_manifest, keys
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
