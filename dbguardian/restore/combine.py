"""Restoring an incremental base backup: its chain, fetched and combined into one data directory.

Each backup of the chain (the full one first) is verified, decrypted, decompressed and extracted into
a directory of its own beside the data directory (same filesystem), then ``pg_combinebackup`` writes
the synthetic full backup, which is moved into the data directory; the chain's directories are removed
whatever happens. Disk: the chain's extracted sizes plus the result (with PostgreSQL 18's
``--link`` the result hard-links the chain's files instead of copying them, so it costs nothing more).
WAL replay then runs as for any base backup, from the newest incremental's start.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from dbguardian.catalog import Backup, PhysicalManifest
from dbguardian.chains import chain, missing_link
from dbguardian.errors import BackupNotFound, OperationError
from dbguardian.logs import get_logger
from dbguardian.pipeline.encrypt import decrypt_stream, identity_file
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.read import stored_bytes
from dbguardian.pipeline.stages import decompressor
from dbguardian.postgres import find_exact_tool
from dbguardian.restore.extract import extract_stream
from dbguardian.storage import Storage

log = get_logger("dbguardian.restore")

PARALLEL_EXTRACTIONS = 2
LINK_FROM = 18
"""pg_combinebackup --link (hard links instead of copies) exists from PostgreSQL 18."""


def chain_on(storage: str, backups: Sequence[Backup[PhysicalManifest]], backup_id: str) -> list[PhysicalManifest]:
    """The manifests ``backup_id``'s restore combines, the full one first, all from ``storage``; raises
    :class:`BackupNotFound` naming the missing link when the chain is broken there."""
    here = {record.id: record.manifest for record in backups if storage in record.storages}
    parents = {backup: manifest.incremental_of for backup, manifest in here.items()}
    links = chain(backup_id, parents)
    if links is None:
        gone = missing_link(backup_id, parents)
        raise BackupNotFound(
            f"incremental base backup {backup_id} cannot be restored from {storage}: the backup it is based on, "
            f"{gone}, is not there (chain_broken)"
        )
    return [here[link] for link in links]


async def extract_one(
    manifest: PhysicalManifest,
    storage: Storage,
    into: Path,
    identity: Path | None,
    *,
    owner: tuple[int, int] | None = None,
    sync: bool = True,
) -> int:
    """One base backup's tar, verified and decrypted as it is read, extracted into ``into``."""
    stored = manifest.objects.get("base")
    if stored is None:
        raise OperationError(f"base backup {manifest.id} has no 'base' object")
    chunks = stored_bytes(storage, stored)
    if manifest.encryption is not None:
        chunks = decrypt_stream(manifest.encryption.method, identity_file(identity), chunks)
    return await extract_stream(chunks, into, decompressor(manifest.compression.algorithm), owner=owner, sync=sync)


async def combine_chain(
    links: Sequence[PhysicalManifest],
    storage: Storage,
    pgdata: Path,
    identity: Path | None,
    pg_bin_dirs: list[Path],
) -> int:
    """Extract ``links`` (full first) and combine them into ``pgdata`` (empty but for ``pg_wal``); returns
    how many files the data directory holds."""
    newest = links[-1]
    tool = await find_exact_tool("pg_combinebackup", newest.pg_version, pg_bin_dirs, needed_by=f"base backup {newest.id}")
    work = Path(tempfile.mkdtemp(prefix=".dbguardian-combine-", dir=pgdata.parent))
    try:
        directories = [work / manifest.id for manifest in links]
        # Two at a time: each is a read, a decompression and a tar extraction, and one leaves a CPU idle.
        slots = asyncio.Semaphore(PARALLEL_EXTRACTIONS)

        async def extract(manifest: PhysicalManifest, directory: Path) -> None:
            async with slots:
                directory.mkdir(mode=0o700)
                await extract_one(manifest, storage, directory, identity, sync=False)

        try:
            async with asyncio.TaskGroup() as group:
                for manifest, directory in zip(links, directories, strict=True):
                    group.create_task(extract(manifest, directory))
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None  # one error, as the restore reports it (the others follow)
        log.info("base backups extracted; combining", backups=[m.id for m in links], tool=tool.path)
        combined = work / "combined"
        argv = [tool.path, "--output", str(combined), *(["--link"] if tool.major >= LINK_FROM else [])]
        async with Child([*argv, *map(str, directories)], stdout=False) as child:
            await child.wait_checked()
        _move_into(combined, pgdata)
        return sum(1 for _ in pgdata.rglob("*"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _move_into(combined: Path, pgdata: Path) -> None:
    """Move the combined data directory's entries into ``pgdata`` (same filesystem: renames); ``pg_wal``
    exists there already (the restore made it first), so its contents move instead."""
    for entry in combined.iterdir():
        destination = pgdata / entry.name
        if entry.name == "pg_wal" and destination.is_dir():
            for item in entry.iterdir():
                item.rename(destination / item.name)
            continue
        entry.rename(destination)
