"""Restore a logical (pg_dump) backup into a database: staging database → pg_restore → verify → rename.

Data always lands in a scratch (staging) database first; only after pg_restore succeeded, the stored
bytes matched the manifest's sha256 and every table's row count matched the manifest does the staging
database take the requested name. A failed restore leaves the existing database untouched, and the
staging database is dropped whatever happened (:mod:`dbguardian.scratch`).

Replacing an existing database (``force``) takes a safety backup of it first. How that backup is
taken is the caller's: restore sits below the jobs layer and is handed a ``safety_backup`` function.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from dbguardian.catalog import LogicalManifest, TableCount
from dbguardian.dbfacts import quote_ident
from dbguardian.errors import OperationError, RestoreRefused, UsageError
from dbguardian.logs import get_logger
from dbguardian.pipeline.encrypt import identity_file
from dbguardian.policy import Policy
from dbguardian.postgres import ConnectionInfo, connected, connection_info, server_major_at
from dbguardian.progress import Progress
from dbguardian.restore.hooks import RestoreHooks
from dbguardian.restore.locate import locate, pg_restore_for
from dbguardian.restore.pg_restore import archive, restore_and_check
from dbguardian.restore.verify import count_restored_rows, counts_verdict
from dbguardian.scratch import (
    MAX_DB_NAME,
    DatabaseLike,
    ScratchDatabase,
    admin_session,
    database_exists,
    drop_database,
    scratch_database,
)

log = get_logger("dbguardian.restore")

SafetyBackup = Callable[[ConnectionInfo], Awaitable[LogicalManifest]]
"""Back up the database the connection points at (before it is replaced); returns the new backup's manifest."""


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
    server: str = ""
    """Where it was restored (user@host:port/database), the target's server unless --dsn named another."""


def check_into(into: str) -> None:
    if not into or len(into) > MAX_DB_NAME:
        raise UsageError(f"--into must be a database name of 1 to {MAX_DB_NAME} characters")


def staging_name(into: str) -> str:
    suffix = f"_dbg_restore_{secrets.token_hex(3)}"
    return into[: MAX_DB_NAME - len(suffix)] + suffix


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
    safety_backup: SafetyBackup | None = None,
    before: datetime | None = None,
    server: ConnectionInfo | None = None,
) -> RestoreReport:
    """Restore backup ``reference`` of ``target_name`` into database ``into`` on the target's server (or on
    ``server``: another host, for disaster recovery). ``before``: the newest backup from then or earlier.

    An existing ``into`` is replaced only with ``force``, and only after ``safety_backup`` backed it up.
    """
    check_into(into)
    started = time.monotonic()
    target = policy.target(target_name)
    located = await locate(policy, target_name, reference, from_storage, before=before)
    manifest = located.record.manifest
    if manifest.encryption is not None:
        identity = identity_file(identity)  # fail before touching any database
    server = server or connection_info(target)
    pg_restore = await pg_restore_for(manifest, policy.pg_bin_dirs, await server_major_at(server))
    where = server.with_database(into).describe()
    hooks = RestoreHooks(target.hooks, target_name, into, where, manifest.id)
    await hooks.before()
    async with (
        admin_session(server) as admin,
        staged(admin, server, into, manifest, force=force, safety_backup=safety_backup) as stage,
    ):
        staging, exists, safety_id = stage.database, stage.replaces, stage.safety_backup_id
        log.info("restore started", target=target_name, id=manifest.id, storage=located.storage.name,
                 staging=staging.name)  # fmt: skip
        progress = Progress(f"restore {manifest.id}", manifest.objects["dump"].size_bytes)
        # One job streams straight into pg_restore (no copy on disk); parallel jobs need a seekable file.
        spool_dir = policy.state_dir / "tmp" if jobs > 1 else None

        async def count_loaded_rows(info: ConnectionInfo = staging.info) -> list[TableCount]:
            async with connected(info) as connection:
                return await count_restored_rows(connection)

        async with archive(located, identity=identity, spool_dir=spool_dir, progress=progress) as source:
            # The rows are counted while pg_restore builds the indexes (restore_and_check).
            mode, loaded = await restore_and_check(
                pg_restore.path, staging.info, source, count_loaded_rows, jobs=jobs, no_owner=no_owner, psql=pg_restore.psql
            )
        if spool_dir is None:
            progress.finish()
        async with connected(staging.info) as connection:
            verdict = await counts_verdict(connection, manifest, loaded)
        verdict.raise_for_mismatch()
        await swap_into_place(staging, into, exists)
    report = RestoreReport(
        backup_id=manifest.id,
        target=target_name,
        database=into,
        storage=located.storage.name,
        mode=mode,
        seconds=round(time.monotonic() - started, 3),
        tables=verdict.tables,
        rows=verdict.rows,
        safety_backup_id=safety_id,
        replaced_existing=exists,
        server=where,
    )
    log.info("restore finished", **report.__dict__)
    await hooks.after()
    return report


@dataclass
class Stage:
    """The staging database of a restore, and what the restore will replace."""

    database: ScratchDatabase
    replaces: bool
    safety_backup_id: str | None


@contextlib.asynccontextmanager
async def staged(
    admin: asyncpg.Connection,
    server: ConnectionInfo,
    into: str,
    like: DatabaseLike,
    *,
    force: bool,
    safety_backup: SafetyBackup | None,
) -> AsyncIterator[Stage]:
    """The staging database for a restore into ``into`` (dropped on exit unless moved into place).

    An existing ``into`` is refused without ``force``, and replaced only after ``safety_backup`` backed it up.
    """
    exists = await database_exists(admin, into)
    if exists and not force:
        raise RestoreRefused(
            f"database {into!r} already exists; pass --force to replace it (a safety backup is taken first)"
        )
    if exists and safety_backup is None:
        raise RestoreRefused(f"database {into!r} exists and no safety backup can be taken here; not replacing it")
    safety_id = None
    if exists and safety_backup is not None:
        safety_id = (await safety_backup(server.with_database(into))).id
        log.info("safety backup taken before replacing", database=into, id=safety_id)
    async with scratch_database(admin, server, staging_name(into), like) as staging:
        yield Stage(staging, exists, safety_id)


async def swap_into_place(staging: ScratchDatabase, into: str, replace: bool) -> None:
    """Rename the verified staging database to ``into``; an existing ``into`` is retired, then dropped."""
    admin: asyncpg.Connection = staging.admin
    retired = staging_name(into + "_old")
    try:
        if replace:
            # Only client sessions: an autovacuum worker cannot be signalled by a non-superuser (PostgreSQL
            # refuses with "must be a superuser"), and RENAME below stops autovacuum workers on its own.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                into,
            )
            await admin.execute(f"ALTER DATABASE {quote_ident(into)} RENAME TO {quote_ident(retired)}")
            try:
                await admin.execute(f"ALTER DATABASE {quote_ident(staging.name)} RENAME TO {quote_ident(into)}")
            except asyncpg.PostgresError:
                await admin.execute(f"ALTER DATABASE {quote_ident(retired)} RENAME TO {quote_ident(into)}")
                raise
        else:
            await admin.execute(f"ALTER DATABASE {quote_ident(staging.name)} RENAME TO {quote_ident(into)}")
    except asyncpg.PostgresError as error:
        raise OperationError(f"cannot move the restored database into place as {into!r}: {error}") from None
    staging.keep()  # it is ``into`` now
    if replace:
        # The restore has succeeded; a retired copy that cannot be dropped is logged and counted, not fatal.
        await drop_database(admin, retired, staging.server)
