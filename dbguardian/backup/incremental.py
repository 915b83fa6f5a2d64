"""Incremental base backups (PostgreSQL 17+): which backup the next one is based on, and the
``backup_manifest`` files that ``pg_basebackup --incremental`` needs.

A tier with ``incremental: true`` takes its base backup against the newest base backup of the target
(full or incremental) that every storage of the target holds, taken from the same cluster (system
identifier). pg_basebackup reads that backup's ``backup_manifest`` from a local file: each base
backup's manifest is kept in ``state_dir/base-manifests/<target>/`` (0600) when it commits, since the
stored copy inside the base backup's tar may be encrypted to a key the daemon does not hold. Whenever
an incremental cannot be taken (:func:`why_full`: PostgreSQL before 17, ``summarize_wal`` off, no base
backup to build on, a chain of :data:`MAX_CHAIN`, its manifest not on this host), a full base backup is
taken instead, with a warning that says why: a missing incremental must never mean a missing backup.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from dbguardian.catalog import AnyBackup, PhysicalManifest
from dbguardian.files import open_private, private_dirs
from dbguardian.logs import get_logger
from dbguardian.postgres import INCREMENTAL_BACKUP_MAJOR

log = get_logger("dbguardian.backup")

MANIFESTS_DIR = "base-manifests"
MAX_CHAIN = 32
"""Base backups in one chain, the full one included: a restore combines them all, and retention keeps a
chain while any of it is kept, so a tier of incrementals alone would otherwise grow one chain forever."""
KEEP_LOCAL_MANIFESTS = 16
"""backup_manifest files kept per target: the newest few are all a next incremental can be based on."""


@dataclass(frozen=True)
class Parent:
    """The base backup an incremental is taken against, and its ``backup_manifest`` on this host."""

    manifest: PhysicalManifest
    backup_manifest: Path

    @property
    def chain(self) -> list[str]:
        """The new incremental's chain: the parent's, then the parent."""
        return [*self.manifest.chain, self.manifest.id]


def manifest_file(state_dir: Path, target: str, backup_id: str) -> Path:
    return state_dir / MANIFESTS_DIR / target / f"{backup_id}.backup_manifest"


def keep_backup_manifest(state_dir: Path, target: str, backup_id: str, data: bytes) -> None:
    """Keep a committed base backup's ``backup_manifest`` (owner-only), dropping the oldest beyond a few."""
    path = manifest_file(state_dir, target, backup_id)
    private_dirs(path.parent)
    with open_private(path, "wb") as file:
        file.write(data)
    kept = sorted(path.parent.glob("*.backup_manifest"))  # backup ids sort by time
    for old in kept[:-KEEP_LOCAL_MANIFESTS]:
        old.unlink(missing_ok=True)


def choose_parent(
    backups: Sequence[AnyBackup], system_identifier: str, storage_names: Sequence[str]
) -> PhysicalManifest | None:
    """The newest base backup of the same cluster held by every one of ``storage_names``, else None."""
    for record in backups:  # newest first
        manifest = record.manifest
        if (
            isinstance(manifest, PhysicalManifest)
            and manifest.system_identifier == system_identifier
            and set(storage_names) <= set(record.storages)
        ):
            return manifest
    return None


def why_full(major: int, summarize_wal: str | None, parent: PhysicalManifest | None, manifest_here: bool) -> str | None:
    """Why the next base backup of an incremental tier must be a full one; None when it can be incremental."""
    if major < INCREMENTAL_BACKUP_MAJOR:
        return f"PostgreSQL {major} has no incremental base backups (17 and newer have)"
    if summarize_wal != "on":
        return "summarize_wal is off on the server (ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf())"
    if parent is None:
        return "no base backup of this cluster on every storage of the target to base it on"
    if len(parent.chain) + 2 > MAX_CHAIN:
        return f"the chain has reached {MAX_CHAIN} base backups (a full one starts the next)"
    if not manifest_here:
        return f"the backup_manifest of {parent.id} is not on this host"
    return None


async def incremental_parent(
    connection: asyncpg.Connection,
    major: int,
    system_identifier: str,
    backups: Sequence[AnyBackup],
    storage_names: Sequence[str],
    state_dir: Path,
    target: str,
) -> Parent | None:
    """What the next incremental is based on; None (after a warning saying why) when a full one is due."""
    parent = choose_parent(backups, system_identifier, storage_names)
    path = None if parent is None else manifest_file(state_dir, target, parent.id)
    summarize = await connection.fetchval("SELECT current_setting('summarize_wal', true)")
    here = path is not None and path.is_file() and os.access(path, os.R_OK)
    reason = why_full(major, summarize, parent, here)
    if reason is not None or parent is None or path is None:
        log.warning("taking a full base backup instead of an incremental one", target=target, reason=reason)
        return None
    return Parent(parent, path)
