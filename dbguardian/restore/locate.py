"""Finding the backup to restore, and how to read it back: shared by restore, validate-only and drills."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from dbguardian.catalog import Backup, BackupRecord, Catalog, LogicalManifest
from dbguardian.errors import BackupNotFound, UsageError
from dbguardian.policy import Policy
from dbguardian.storage import Storage, target_storages


@dataclass(frozen=True)
class Located:
    """A committed backup and the storage it will be read from."""

    record: BackupRecord
    storage: Storage


class ReadOptions(TypedDict):
    compression: str
    encryption: str | None
    identity: Path | None


def read_options(manifest: LogicalManifest, identity: Path | None) -> ReadOptions:
    """How to read a backup's objects back, from its manifest (for pipeline.read)."""
    encryption = None if manifest.encryption is None else manifest.encryption.method
    return ReadOptions(compression=manifest.compression.algorithm, encryption=encryption, identity=identity)


def server_major_of(server_version: str) -> int:
    return int(server_version.split(".")[0].split()[0])


async def locate(
    policy: Policy, target_name: str, reference: str, from_storage: str | None = None, *, before: datetime | None = None
) -> Located:
    """``reference`` (``latest`` or an id) of ``target_name``, on ``from_storage`` or the first storage holding it.

    ``before``: instead of ``latest``, the newest logical backup whose snapshot was taken at or before it.
    """
    storages = target_storages(policy, target_name)
    if from_storage is not None:
        storages = [storage for storage in storages if storage.name == from_storage]
        if not storages:
            raise UsageError(f"target {target_name!r} does not use storage {from_storage!r}")
    catalog = Catalog(storages)
    if before is not None:
        if reference != "latest":
            raise UsageError("give a backup id or --before, not both")
        found = await catalog.at_or_before(target_name, before, kind="logical")
        if not isinstance(found.manifest, LogicalManifest):  # kind="logical" selects these only
            raise BackupNotFound(f"backup {found.id} of {target_name!r} is not a pg_dump backup")
        record: BackupRecord = Backup(found.manifest, found.storages)
    else:
        record = await catalog.logical(target_name, reference)
    chosen = next(storage for storage in storages if storage.name in record.storages)
    return Located(record, chosen)
