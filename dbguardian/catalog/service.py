"""The catalog service: which committed backups exist, and which one a caller means.

One place answers every "which backup" question — list (per target, per storage or merged over
storages), ``latest`` (the newest valid backup that is not a restore's safety copy), newest per tier
(catch-up), by id, and newest at or before a moment (point-in-time restore) — so that restore, drill,
verify, health, prune and the daemon cannot disagree about it.

Listing reads ``<target>/`` with a delimiter listing where the storage has one (``list_dirs``: the
backup folders, never the WAL below ``<target>/wal/``), else one recursive listing filtered to backup
folders, then each backup's ``manifest.json``. A manifest that cannot be read — corrupt, misplaced, or
in a format newer than this code knows — is logged and skipped, like a storage that cannot be listed
(``strict=True`` raises instead).

The pure selection functions (:func:`latest`, :func:`by_id`, :func:`select`, :func:`at_or_before`,
:func:`newest_by_tier`) take records already listed; :class:`Catalog` lists and selects in one call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from dbguardian.catalog import keys
from dbguardian.catalog.listing import backup_ids, list_folders
from dbguardian.catalog.manifest import (
    SAFETY_TIER,
    AnyManifest,
    BaseManifest,
    InvalidManifest,
    Kind,
    LogicalManifest,
    UnsupportedManifestFormat,
    encode_manifest,
    parse_manifest,
)
from dbguardian.errors import BackupNotFound, ObjectExists, ObjectNotFound, StorageError
from dbguardian.logs import get_logger
from dbguardian.storage.base import Storage

log = get_logger("dbguardian.catalog")

M = TypeVar("M", bound=BaseManifest)

_PARALLEL_READS = 8
_RESERVED_ROOT = keys.PROBE_PREFIX.split("/")[0]


@dataclass
class Backup(Generic[M]):
    """A committed backup and the storages that hold its manifest."""

    manifest: M
    storages: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def target(self) -> str:
        return self.manifest.target

    @property
    def tier(self) -> str:
        return self.manifest.tier

    def to_json(self) -> dict[str, object]:
        manifest = self.manifest
        tables = manifest.tables if isinstance(manifest, LogicalManifest) else []
        return {
            "id": manifest.id,
            "target": manifest.target,
            "tier": manifest.tier,
            "kind": manifest.kind,
            "database": manifest.database,
            "started_at": _iso(manifest.started_at),
            "finished_at": _iso(manifest.finished_at),
            "duration_seconds": manifest.duration_seconds,
            "size_bytes": manifest.size_bytes,
            "raw_size_bytes": manifest.raw_size_bytes,
            "sha256": manifest.sha256,
            "compression": manifest.compression.model_dump(),
            "storage": self.storages,
            "status": "valid",
            "server_version": manifest.server_version,
            "tables": len(tables),
            "rows": sum(table.rows for table in tables),
            "has_globals": "globals" in manifest.objects,
        }


BackupRecord = Backup[LogicalManifest]
"""A logical backup: what restore and drills (pg_restore into a database) work with."""

AnyBackup = Backup[AnyManifest]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _newest_first(record: Backup[M]) -> tuple[datetime, str]:
    return (record.manifest.started_at, record.id)


# Pure selection over listed records.


def regular(records: Iterable[Backup[M]]) -> list[Backup[M]]:
    """Records that are not a restore's safety copy, in the order given."""
    return [record for record in records if record.manifest.tier != SAFETY_TIER]


def latest(records: Iterable[Backup[M]], target: str) -> Backup[M]:
    """The target's newest backup that is not a safety copy."""
    candidates = regular(record for record in records if record.target == target)
    if not candidates:
        raise BackupNotFound(f"target {target!r} has no valid backup")
    return max(candidates, key=_newest_first)


def by_id(records: Iterable[Backup[M]], target: str, backup_id: str) -> Backup[M]:
    for record in records:
        if record.target == target and record.id == backup_id:
            return record
    raise BackupNotFound(f"target {target!r} has no valid backup {backup_id!r}")


def select(records: Iterable[Backup[M]], target: str, reference: str) -> Backup[M]:
    """``latest`` (the newest non-safety backup) or an exact id, among one target's committed backups."""
    return latest(records, target) if reference == "latest" else by_id(records, target, reference)


def at_or_before(records: Iterable[Backup[M]], target: str, moment: datetime, *, include_safety: bool = False) -> Backup[M]:
    """The newest backup whose state is from ``moment`` or earlier (``manifest.consistent_at``).

    A logical backup holds the state of its snapshot (taken as it started); a physical one is
    consistent from the moment it finished.
    """
    candidates = [record for record in records if record.target == target]
    if not include_safety:
        candidates = regular(candidates)
    fitting = [record for record in candidates if record.manifest.consistent_at <= moment]
    if not fitting:
        raise BackupNotFound(f"target {target!r} has no valid backup from {_iso(moment)} or earlier")
    return max(fitting, key=lambda record: (record.manifest.consistent_at, record.id))


def newest_by_tier(records: Iterable[Backup[M]]) -> dict[tuple[str, str], datetime]:
    """Start time of the newest backup per (target, tier): what catch-up compares schedules with."""
    newest: dict[tuple[str, str], datetime] = {}
    for record in records:
        key = (record.target, record.tier)
        if key not in newest or record.manifest.started_at > newest[key]:
            newest[key] = record.manifest.started_at
    return newest


def logical_only(records: Iterable[Backup[AnyManifest]]) -> list[BackupRecord]:
    """The logical backups among ``records`` (same order), typed as such."""
    return [Backup(record.manifest, record.storages) for record in records if isinstance(record.manifest, LogicalManifest)]


# Reading storage.


async def _manifest_keys(storage: Storage, target: str | None) -> list[str]:
    """Keys where manifests of ``target`` (or of every target) may be; some may not exist (runs in progress)."""
    if not storage.capabilities.delimiter_listing:
        objects = await storage.list(keys.target_prefix(target) if target is not None else "")
        return [info.key for info in objects if (parsed := keys.parse_backup_key(info.key)) and parsed.is_manifest]
    targets = (
        [target] if target is not None else [name for name in await list_folders(storage, "") if name != _RESERVED_ROOT]
    )
    found: list[str] = []
    for name in targets:
        found.extend(keys.manifest_key(name, backup_id) for backup_id in await backup_ids(storage, name))
    return found


async def read_manifest(storage: Storage, target: str, backup_id: str) -> AnyManifest:
    """One backup's manifest, read directly; raises ``ObjectNotFound``, :class:`InvalidManifest` or
    :class:`UnsupportedManifestFormat` (a newer dbguardian wrote it)."""
    key = keys.manifest_key(target, backup_id)
    manifest = parse_manifest(await storage.get_bytes(key), f"{storage.name}:{key}")
    if manifest.id != backup_id or manifest.target != target:
        raise InvalidManifest(f"{storage.name}:{key}: the manifest describes {manifest.target}/{manifest.id}")
    return manifest


async def _read_listed(storage: Storage, key: str) -> AnyManifest | None:
    parsed = keys.parse_backup_key(key)
    assert parsed is not None
    try:
        return await read_manifest(storage, parsed.target, parsed.backup_id)
    except ObjectNotFound:
        return None  # a folder without a manifest: a run in progress or a leftover
    except UnsupportedManifestFormat as error:
        log.error("manifest written by a newer dbguardian ignored", storage=storage.name, key=key, error=str(error))
    except InvalidManifest as error:
        log.error("unreadable manifest ignored", storage=storage.name, key=key, error=str(error))
    return None


async def manifests_on(storage: Storage, target: str | None = None) -> list[AnyManifest]:
    """Every readable manifest on one storage (of ``target``, or of every target); raises ``StorageError``."""
    limit = asyncio.Semaphore(_PARALLEL_READS)

    async def read(key: str) -> AnyManifest | None:
        async with limit:
            return await _read_listed(storage, key)

    found = await asyncio.gather(*(read(key) for key in await _manifest_keys(storage, target)))
    return [manifest for manifest in found if manifest is not None]


async def commit_manifest(storage: Storage, manifest: BaseManifest) -> None:
    """Write the manifest last: from now on the backup exists on ``storage``.

    Where the storage can create an object only if it is absent, a committed manifest is never
    replaced: finding one already there is fine only if it is byte for byte ours (a retried request
    whose first reply was lost), anything else is refused.
    """
    key = keys.manifest_key(manifest.target, manifest.id)
    data = encode_manifest(manifest)
    if not storage.capabilities.conditional_put:
        await storage.put_bytes(key, data)
        return
    try:
        await storage.put_bytes(key, data, if_absent=True)
    except ObjectExists:
        if await storage.get_bytes(key) != data:
            raise StorageError(
                f"{storage.name}:{key}: another manifest already holds this backup id; refusing to replace it"
            ) from None


class Catalog:
    """Committed backups on a set of storages (one target's, or every storage of the policy)."""

    def __init__(self, storages: Sequence[Storage]) -> None:
        self.storages = list(storages)

    async def backups(self, target: str | None = None, *, strict: bool = False) -> list[AnyBackup]:
        """Backups of ``target`` (or every target), merged by id over the storages, newest first.

        A storage that cannot be listed is logged and left out, unless ``strict`` (then it raises).
        """
        results = await asyncio.gather(*(manifests_on(s, target) for s in self.storages), return_exceptions=True)
        records: dict[tuple[str, str], AnyBackup] = {}
        for storage, result in zip(self.storages, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, StorageError) and not strict:
                    log.error("storage unreadable while listing", storage=storage.name, error=str(result))
                    continue
                raise result
            for manifest in result:
                record = records.setdefault((manifest.target, manifest.id), Backup(manifest))
                record.storages.append(storage.name)
        return sorted(records.values(), key=_newest_first, reverse=True)

    async def logical_backups(self, target: str | None = None) -> list[BackupRecord]:
        return logical_only(await self.backups(target))

    async def latest(self, target: str, *, kind: Kind | None = None) -> AnyBackup:
        return latest(self._of_kind(await self.backups(target), kind), target)

    async def by_id(self, target: str, backup_id: str) -> AnyBackup:
        try:
            return by_id(await self.backups(target), target, backup_id)
        except BackupNotFound:
            await self._explain_refusal(target, backup_id)
            raise

    async def _explain_refusal(self, target: str, backup_id: str) -> None:
        """A backup asked for by id that listing skipped: say why (its manifest was refused), not just
        "no such backup" — a tampered or newer manifest must not look like a typo."""
        for storage in self.storages:
            try:
                await read_manifest(storage, target, backup_id)
            except InvalidManifest as error:
                raise BackupNotFound(f"backup {backup_id!r} of {target!r} cannot be used: {error}") from None
            except (StorageError, ValueError):
                continue

    async def at_or_before(self, target: str, moment: datetime, *, kind: Kind | None = None) -> AnyBackup:
        return at_or_before(self._of_kind(await self.backups(target), kind), target, moment)

    async def newest_by_tier(self, target: str | None = None) -> dict[tuple[str, str], datetime]:
        return newest_by_tier(await self.backups(target))

    async def logical(self, target: str, reference: str = "latest") -> BackupRecord:
        """A logical backup to restore or drill: ``latest`` or an exact id."""
        if reference == "latest":
            record = await self.latest(target, kind="logical")
        else:
            record = await self.by_id(target, reference)
        if not isinstance(record.manifest, LogicalManifest):
            raise BackupNotFound(f"backup {record.id} of {target!r} is a {record.manifest.kind} backup, not a pg_dump one")
        return Backup(record.manifest, record.storages)

    @staticmethod
    def _of_kind(records: list[AnyBackup], kind: Kind | None) -> list[AnyBackup]:
        return records if kind is None else [record for record in records if record.manifest.kind == kind]
