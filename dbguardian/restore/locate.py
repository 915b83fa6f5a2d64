"""Finding the backup to restore, and how to read it back: shared by restore, validate-only and drills."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from dbguardian.catalog import Backup, BackupRecord, Catalog, LogicalManifest
from dbguardian.errors import BackupNotFound, UsageError
from dbguardian.policy import Policy
from dbguardian.postgres import find_tool
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


def archive_major(manifest: LogicalManifest) -> int:
    """The oldest pg_restore that reads ``manifest``'s archive: the pg_dump that wrote it sets the archive
    format, and it was at least the source server's major."""
    return max(server_major_of(manifest.pg_dump_version), server_major_of(manifest.server_version))


TRANSACTION_TIMEOUT_FROM = 17
"""pg_restore from 17 on starts every session with ``SET transaction_timeout = 0``, a setting older
servers reject: a known trap (a backup taken with newer client tools no longer restores into its own
server); see :class:`RestoreTool`."""


@dataclass(frozen=True)
class RestoreTool:
    """pg_restore, and how its output reaches the server."""

    path: str
    psql: str | None = None
    """Set when pg_restore is 17 or newer and the server older: pg_restore then writes the restore as a
    script (``--file=-``) that this psql runs, without that one ``SET`` line
    (:func:`dbguardian.restore.pg_restore.run_pg_restore`). pg_restore of the server's own major need not read
    the archive of a newer pg_dump (its format version may be newer), and no option leaves the line out."""


async def pg_restore_for(manifest: LogicalManifest, pg_bin_dirs: list[Path], into_major: int | None = None) -> RestoreTool:
    """pg_restore for ``manifest``'s archive, loaded into a server of ``into_major`` (None: read only).

    The newer of the archive's and the server's majors: a pg_restore reads the archives of every older
    pg_dump, and a dump of an older server goes into a newer one with the newer one's tools (the upgrade
    path, docs/guides/upgrade.md)."""
    major = archive_major(manifest) if into_major is None else max(archive_major(manifest), into_major)
    tool = await find_tool("pg_restore", major, pg_bin_dirs)
    if into_major is None or not tool.major >= TRANSACTION_TIMEOUT_FROM > into_major:
        return RestoreTool(tool.path)
    psql = await find_tool("psql", tool.major, pg_bin_dirs)  # it runs what this pg_restore writes
    return RestoreTool(tool.path, psql.path)


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
