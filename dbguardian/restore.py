"""Restore a committed backup: into a new database, over an existing one (after a safety backup), or
validate-only.

Data always lands in a staging database first; only after pg_restore succeeded, the stored bytes
matched the manifest's sha256 and every table's row count matched the manifest does the staging
database take the requested name. A failed restore leaves the existing database untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import asyncpg

from dbguardian.catalog import SAFETY_TIER, BackupRecord, Manifest, list_backups, select_backup
from dbguardian.dbfacts import compare_counts, count_rows, object_counts, quote_ident
from dbguardian.errors import (
    DatabaseError,
    OperationError,
    RestoreRefused,
    UsageError,
    VerificationError,
)
from dbguardian.jobs.backup import backup_database, target_config, target_storages
from dbguardian.logs import get_logger
from dbguardian.pipeline.encrypt import IDENTITY_ENV, identity_file
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.read import feed_program, read_verified, spooled_archive, stored_bytes
from dbguardian.policy import Policy
from dbguardian.postgres import ConnectionInfo, connected, connection_info, find_tool
from dbguardian.progress import Progress
from dbguardian.storage import Storage

log = get_logger("dbguardian.restore")

MAX_DB_NAME = 63


@dataclass
class RestoreReport:
    backup_id: str
    target: str
    database: str
    storage: str
    mode: str
    seconds: float
    tables: int
    rows: int
    safety_backup_id: str | None = None
    replaced_existing: bool = False


@dataclass
class ValidateReport:
    backup_id: str
    target: str
    storage: str
    stored_bytes: int
    raw_bytes: int
    toc_entries: int | None
    """Entries of the archive's table of contents; None when encrypted and no identity was given."""
    seconds: float
    toc: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Located:
    record: BackupRecord
    storage: Storage


async def locate(policy: Policy, target_name: str, reference: str, from_storage: str | None = None) -> Located:
    target = target_config(policy, target_name)
    storages = target_storages(policy, target)
    if from_storage is not None:
        storages = [storage for storage in storages if storage.name == from_storage]
        if not storages:
            raise UsageError(f"target {target_name!r} does not use storage {from_storage!r}")
    record = select_backup(await list_backups(storages, target_name), target_name, reference)
    chosen = next(storage for storage in storages if storage.name in record.storages)
    return Located(record, chosen)


async def validate(
    policy: Policy,
    target_name: str,
    reference: str,
    from_storage: str | None = None,
    identity: Path | None = None,
) -> ValidateReport:
    """Read, checksum, decrypt, decompress and ``pg_restore --list`` a backup, touching no database.

    An encrypted backup without an identity (``--identity`` or the environment) is checked as far
    as possible without the key: every stored byte is read and its sha256 compared.
    """
    started = time.monotonic()
    located = await locate(policy, target_name, reference, from_storage)
    manifest = located.record.manifest
    stored = manifest.objects["dump"]
    progress = Progress(f"validate {manifest.id}", stored.size_bytes)
    toc: list[str] | None = None
    if manifest.encryption is not None and identity is None and not os.environ.get(IDENTITY_ENV):
        for item in manifest.objects.values():
            async for _ in stored_bytes(located.storage, item, progress if item is stored else None):
                pass
    else:
        pg_restore = await find_tool("pg_restore", server_major_of(manifest.server_version), policy.pg_bin_dirs)
        async with Child([pg_restore.path, "--list"], stdin=True) as child:
            lines: list[str] = []

            async def collect() -> None:
                async for chunk in child.stdout_chunks():
                    lines.extend(chunk.decode(errors="replace").splitlines())

            dump_stream = read_verified(located.storage, stored, **read_options(manifest, identity), progress=progress)
            await asyncio.gather(feed_program(child, dump_stream), collect())
            await child.wait_checked()
        if "globals" in manifest.objects:
            async for _ in read_verified(located.storage, manifest.objects["globals"], **read_options(manifest, identity)):
                pass
        toc = [line for line in lines if line and not line.startswith(";")]
    progress.finish()
    report = ValidateReport(
        backup_id=manifest.id,
        target=target_name,
        storage=located.storage.name,
        stored_bytes=stored.size_bytes,
        raw_bytes=stored.raw_size_bytes,
        toc_entries=None if toc is None else len(toc),
        seconds=round(time.monotonic() - started, 3),
        toc=toc or [],
    )
    log.info("backup validated", target=target_name, id=manifest.id, storage=located.storage.name,
             toc_entries=report.toc_entries, contents_checked=toc is not None)  # fmt: skip
    return report


class ReadOptions(TypedDict):
    compression: str
    encryption: str | None
    identity: Path | None


def read_options(manifest: Manifest, identity: Path | None) -> ReadOptions:
    """How to read a backup's objects back, from its manifest (for pipeline.read)."""
    encryption = None if manifest.encryption is None else str(manifest.encryption["method"])
    return ReadOptions(compression=str(manifest.compression["algorithm"]), encryption=encryption, identity=identity)


def server_major_of(server_version: str) -> int:
    return int(server_version.split(".")[0].split()[0])


def staging_name(into: str) -> str:
    suffix = f"_dbg_restore_{secrets.token_hex(3)}"
    return into[: MAX_DB_NAME - len(suffix)] + suffix


async def admin_connection(info: ConnectionInfo) -> asyncpg.Connection:
    """A connection for CREATE/RENAME/DROP DATABASE: the maintenance database, else the target's own."""
    from dbguardian.postgres import connect

    try:
        return await connect(info.with_database("postgres"))
    except DatabaseError:
        return await connect(info)


async def _database_exists(admin: asyncpg.Connection, name: str) -> bool:
    return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def create_database_like(admin: asyncpg.Connection, name: str, manifest: Manifest) -> None:
    """An empty database with the source's encoding and collation."""
    try:
        await admin.execute(
            f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0 ENCODING '{manifest.encoding}' "
            f"LC_COLLATE '{manifest.lc_collate}' LC_CTYPE '{manifest.lc_ctype}'"
        )
    except asyncpg.PostgresError as error:
        raise DatabaseError(f"cannot create database {name!r}: {error}") from None


async def drop_database(admin: asyncpg.Connection, name: str) -> None:
    with contextlib.suppress(asyncpg.PostgresError):
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


async def _pg_restore(
    policy: Policy,
    located: Located,
    info: ConnectionInfo,
    staging: str,
    jobs: int,
    no_owner: bool,
    identity: Path | None,
) -> str:
    manifest = located.record.manifest
    stored = manifest.objects["dump"]
    pg_restore = await find_tool("pg_restore", server_major_of(manifest.server_version), policy.pg_bin_dirs)
    base = [pg_restore.path, "--no-password", "--exit-on-error", f"--dbname={staging}"]
    if no_owner:
        base.append("--no-owner")
    env = info.with_database(staging).libpq_env()
    progress = Progress(f"restore {manifest.id}", stored.size_bytes)
    if jobs <= 1:
        # Streaming: decompressed bytes go straight into pg_restore; no temporary copy on disk.
        async with Child(base, env=env, stdin=True, stdout=False) as child:
            chunks = read_verified(located.storage, stored, **read_options(manifest, identity), progress=progress)
            await feed_program(child, chunks)
            await child.wait_checked()
        progress.finish()
        return "stream"
    # Parallel pg_restore needs a seekable file: spool the verified archive to disk first.
    async with spooled_archive(
        located.storage,
        stored,
        **read_options(manifest, identity),
        spool_dir=policy.state_dir / "tmp",
        prefix=f"restore-{manifest.id}-",
        progress=progress,
    ) as spool:
        progress.finish()
        async with Child([*base, f"--jobs={jobs}", str(spool)], env=env, stdout=False) as child:
            await child.wait_checked()
    return f"file, {jobs} jobs"


def compare_object_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    return [
        f"{kind}: {actual.get(kind, 0)}, expected {count}"
        for kind, count in expected.items()
        if actual.get(kind, 0) != count
    ]


async def _verify_restored(info: ConnectionInfo, manifest: Manifest) -> tuple[int, int]:
    async with connected(info) as connection:
        actual = await count_rows(connection)
        kinds = await object_counts(connection)
    problems = compare_counts(manifest.tables, actual) + compare_object_counts(manifest.object_counts, kinds)
    if problems:
        raise VerificationError("restored data differs from the manifest: " + "; ".join(problems))
    return len(actual), sum(count.rows for count in actual)


async def restore(
    policy: Policy,
    target_name: str,
    reference: str,
    into: str,
    *,
    force: bool = False,
    jobs: int = 1,
    no_owner: bool = False,
    from_storage: str | None = None,
    identity: Path | None = None,
) -> RestoreReport:
    if not into or len(into) > MAX_DB_NAME:
        raise UsageError(f"--into must be a database name of 1 to {MAX_DB_NAME} characters")
    started = time.monotonic()
    target = target_config(policy, target_name)
    located = await locate(policy, target_name, reference, from_storage)
    manifest = located.record.manifest
    if manifest.encryption is not None:
        identity = identity_file(identity)  # fail before touching any database
    info = connection_info(target)
    admin = await admin_connection(info)
    try:
        exists = await _database_exists(admin, into)
        if exists and not force:
            raise RestoreRefused(
                f"database {into!r} already exists; pass --force to replace it (a safety backup is taken first)"
            )
        safety_id = None
        if exists:
            safety = await backup_database(policy, target_name, SAFETY_TIER, info.with_database(into))
            safety_id = safety.id
            log.info("safety backup taken before replacing", database=into, id=safety_id)
        staging = staging_name(into)
        await create_database_like(admin, staging, manifest)
        log.info(
            "restore started",
            target=target_name,
            id=manifest.id,
            storage=located.storage.name,
            staging=staging,
        )
        try:
            mode = await _pg_restore(policy, located, info, staging, jobs, no_owner, identity)
            tables, rows = await _verify_restored(info.with_database(staging), manifest)
            await _swap_into_place(admin, staging, into, exists)
        except BaseException:
            await asyncio.shield(drop_database(admin, staging))
            raise
    finally:
        await asyncio.shield(admin.close())
    report = RestoreReport(
        backup_id=manifest.id,
        target=target_name,
        database=into,
        storage=located.storage.name,
        mode=mode,
        seconds=round(time.monotonic() - started, 3),
        tables=tables,
        rows=rows,
        safety_backup_id=safety_id,
        replaced_existing=exists,
    )
    log.info("restore finished", **report.__dict__)
    return report


async def _swap_into_place(admin: asyncpg.Connection, staging: str, into: str, replace: bool) -> None:
    try:
        if replace:
            retired = staging_name(into + "_old")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                into,
            )
            await admin.execute(f"ALTER DATABASE {quote_ident(into)} RENAME TO {quote_ident(retired)}")
            try:
                await admin.execute(f"ALTER DATABASE {quote_ident(staging)} RENAME TO {quote_ident(into)}")
            except asyncpg.PostgresError:
                await admin.execute(f"ALTER DATABASE {quote_ident(retired)} RENAME TO {quote_ident(into)}")
                raise
            await admin.execute(f"DROP DATABASE {quote_ident(retired)} WITH (FORCE)")
        else:
            await admin.execute(f"ALTER DATABASE {quote_ident(staging)} RENAME TO {quote_ident(into)}")
    except asyncpg.PostgresError as error:
        raise OperationError(f"cannot move the restored database into place as {into!r}: {error}") from None
