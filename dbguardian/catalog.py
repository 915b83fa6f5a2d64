"""Backup ids, manifests and the catalog built from what storage holds.

Layout on every storage::

    <target>/<backup id>/dump.pgc.zst       the pg_dump custom-format archive, compressed
    <target>/<backup id>/globals.sql.zst    pg_dumpall --globals-only (when enabled)
    <target>/<backup id>/manifest.json      written last: the commit

A backup exists only where its manifest exists. Anything else under ``<target>/`` is a leftover of a
failed or killed run and is removed after a grace period.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, ValidationError

from dbguardian.errors import BackupNotFound, StorageError
from dbguardian.logs import get_logger
from dbguardian.storage.base import ObjectInfo, Storage

log = get_logger("dbguardian.catalog")

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
_ID = re.compile(r"^(\d{8}T\d{6})\.(\d{6})Z-([0-9a-f]{4})$")
SAFETY_TIER = "safety"


def new_backup_id(now: datetime, entropy: str | None = None) -> str:
    """``20261122T020000.123456Z-3fa1``: UTC to the microsecond plus random hex.

    Ids sort lexicographically in time order; the suffix keeps two runs started in the same
    microsecond (two processes) apart.
    """
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{entropy if entropy is not None else secrets.token_hex(2)}"


def parse_backup_id(backup_id: str) -> datetime:
    match = _ID.match(backup_id)
    if not match:
        raise ValueError(f"{backup_id!r} is not a backup id")
    return datetime.strptime(f"{match.group(1)}.{match.group(2)}", "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)


def is_backup_id(text: str) -> bool:
    return bool(_ID.match(text))


class StoredObject(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str
    size_bytes: int
    sha256: str
    raw_size_bytes: int
    role_passwords: bool | None = None
    """For globals: whether role password hashes are included (only a superuser can read them)."""


class TableCount(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: str
    table: str
    rows: int

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.table}"


class Manifest(BaseModel):
    """The commit record of one backup; everything needed to find, check and restore it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: int = MANIFEST_FORMAT
    id: str
    target: str
    tier: str
    database: str
    server_version: str
    pg_dump_version: str
    dbguardian_version: str
    host: str
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    raw_size_bytes: int
    size_bytes: int
    sha256: str
    compression: dict[str, str | int]
    encryption: dict[str, str | list[str]] | None = None
    storage: list[str]
    objects: dict[str, StoredObject]
    tables: list[TableCount]
    object_counts: dict[str, int]
    database_size_bytes: int
    encoding: str
    lc_collate: str
    lc_ctype: str
    snapshot: str


@dataclass
class BackupRecord:
    """A committed backup and the storages that hold its manifest."""

    manifest: Manifest
    storages: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.manifest.id

    def to_json(self) -> dict[str, object]:
        manifest = self.manifest
        return {
            "id": manifest.id,
            "target": manifest.target,
            "tier": manifest.tier,
            "database": manifest.database,
            "started_at": _iso(manifest.started_at),
            "finished_at": _iso(manifest.finished_at),
            "duration_seconds": manifest.duration_seconds,
            "size_bytes": manifest.size_bytes,
            "raw_size_bytes": manifest.raw_size_bytes,
            "sha256": manifest.sha256,
            "compression": manifest.compression,
            "storage": self.storages,
            "status": "valid",
            "server_version": manifest.server_version,
            "tables": len(manifest.tables),
            "rows": sum(table.rows for table in manifest.tables),
            "has_globals": "globals" in manifest.objects,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def manifest_key(target: str, backup_id: str) -> str:
    return f"{target}/{backup_id}/{MANIFEST_NAME}"


def object_key(target: str, backup_id: str, name: str) -> str:
    return f"{target}/{backup_id}/{name}"


async def commit_manifest(storage: Storage, manifest: Manifest) -> None:
    await storage.put_bytes(manifest_key(manifest.target, manifest.id), manifest.model_dump_json(indent=2).encode())


async def _read_manifests(storage: Storage, target: str | None) -> list[Manifest]:
    prefix = f"{target}/" if target else ""
    objects = await storage.list(prefix)
    manifests = []
    for info in objects:
        parts = info.key.split("/")
        if len(parts) != 3 or parts[2] != MANIFEST_NAME or not is_backup_id(parts[1]):
            continue
        try:
            manifest = Manifest.model_validate_json(await storage.get_bytes(info.key))
        except ValidationError as error:
            log.error(
                "unreadable manifest ignored",
                storage=storage.name,
                key=info.key,
                error=str(error).splitlines()[0],
            )
            continue
        if manifest.id != parts[1] or manifest.target != parts[0]:
            log.error("manifest does not match its location; ignored", storage=storage.name, key=info.key)
            continue
        manifests.append(manifest)
    return manifests


async def list_backups(storages: Sequence[Storage], target: str | None = None) -> list[BackupRecord]:
    """Committed backups on all given storages, newest first, merged by id."""
    results = await asyncio.gather(*(_read_manifests(storage, target) for storage in storages), return_exceptions=True)
    records: dict[tuple[str, str], BackupRecord] = {}
    for storage, result in zip(storages, results, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, StorageError):
                log.error("storage unreadable while listing", storage=storage.name, error=str(result))
                continue
            raise result
        for manifest in result:
            record = records.setdefault((manifest.target, manifest.id), BackupRecord(manifest))
            record.storages.append(storage.name)
    return sorted(records.values(), key=lambda record: (record.manifest.started_at, record.id), reverse=True)


def select_backup(records: Iterable[BackupRecord], target: str, reference: str) -> BackupRecord:
    """``latest`` (the newest non-safety backup) or an exact id, among one target's committed backups."""
    candidates = [record for record in records if record.manifest.target == target]
    if reference == "latest":
        regular = [record for record in candidates if record.manifest.tier != SAFETY_TIER]
        if not regular:
            raise BackupNotFound(f"target {target!r} has no valid backup")
        return max(regular, key=lambda record: (record.manifest.started_at, record.id))
    for record in candidates:
        if record.id == reference:
            return record
    raise BackupNotFound(f"target {target!r} has no valid backup {reference!r}")


def find_leftovers(objects: Iterable[ObjectInfo], now: datetime, grace: timedelta) -> list[str]:
    """Keys of objects in backup folders without a manifest, untouched for longer than ``grace``.

    A folder counts as idle only if both its run's start (the id) and its newest object are older
    than the grace period, so a long backup still writing is never taken for a leftover.
    """
    folders: dict[str, list[ObjectInfo]] = {}
    committed: set[str] = set()
    for info in objects:
        parts = info.key.split("/")
        if len(parts) != 3 or not is_backup_id(parts[1]):
            continue
        folder = f"{parts[0]}/{parts[1]}"
        folders.setdefault(folder, []).append(info)
        if parts[2] == MANIFEST_NAME:
            committed.add(folder)
    stale: list[str] = []
    for folder, infos in sorted(folders.items()):
        if folder in committed:
            continue
        last_activity = max([parse_backup_id(folder.split("/")[1]), *(info.modified for info in infos)])
        if now - last_activity >= grace:
            stale.extend(sorted(info.key for info in infos))
    return stale


async def remove_leftovers(storage: Storage, target: str, now: datetime, grace: timedelta) -> list[str]:
    keys = find_leftovers(await storage.list(f"{target}/"), now, grace)
    for key in keys:
        await storage.delete(key)
    if keys:
        log.info("removed leftovers of failed runs", storage=storage.name, target=target, objects=keys)
    return keys
