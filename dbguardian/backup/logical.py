"""One backup: snapshot facts, pg_dump streamed through compression (and encryption) into every
storage of the target, manifest last."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

import asyncpg

from dbguardian import __version__
from dbguardian.backup.codec import compression_stage, encryption_stage
from dbguardian.catalog import keys
from dbguardian.catalog.leftovers import remove_leftovers
from dbguardian.catalog.manifest import (
    BaseManifest,
    Compression,
    Encryption,
    LogicalManifest,
    PhysicalManifest,
    StoredObject,
    TableCount,
)
from dbguardian.catalog.service import commit_manifest
from dbguardian.cleanup import cleanup_failed
from dbguardian.dbfacts import count_rows, dumped_tables, object_counts, server_facts
from dbguardian.errors import DatabaseError, OperationError
from dbguardian.logs import get_logger, redact_text
from dbguardian.pipeline import dumpcount
from dbguardian.pipeline.dumpcount import DumpRowCounter, TableData
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.sink import StreamResult, stream_to_storages
from dbguardian.pipeline.stages import file_suffix
from dbguardian.policy import Policy, TargetConfig
from dbguardian.postgres import ConnectionInfo, connected, connection_info, find_tool, server_major
from dbguardian.progress import Progress
from dbguardian.state import record_attempt
from dbguardian.storage import Storage, target_storages

log = get_logger("dbguardian.backup")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class PartialBackup(OperationError):
    """The backup is valid on some storages and failed on others (the run still fails: exit 1)."""

    what = "backup"

    def __init__(self, manifest: LogicalManifest | PhysicalManifest, failures: dict[str, str]) -> None:
        self.manifest = manifest
        self.failures = failures
        detail = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        super().__init__(
            f"{self.what} {manifest.id} is valid on {', '.join(manifest.storage)} but failed on {detail}; "
            "the next run writes a new backup to every storage"
        )


RowCountSource = Literal["dump", "snapshot", "dump+snapshot"]


async def counting_rows(chunks: AsyncIterator[bytes], counter: DumpRowCounter) -> AsyncIterator[bytes]:
    """Pass pg_dump's output through unchanged, counting the rows of every table in it on the way."""
    async for chunk in chunks:
        counter.feed(chunk)
        yield chunk
        del chunk  # not kept alive while pg_dump's next chunk is awaited (pipeline/streams.py)


def streamed_counts(
    tables: list[tuple[str, str]], counter: DumpRowCounter
) -> tuple[list[TableCount], list[tuple[str, str]]]:
    """Counts of ``tables`` (schema, name) read off the dump, and the tables it has no count for."""
    found = counter.counts()
    counts = []
    unaccounted = []
    for schema, table in tables:
        rows = found.get(TableData(schema, table))
        if rows is None:
            unaccounted.append((schema, table))
        else:
            counts.append(TableCount(schema_name=schema, table=table, rows=rows))
    return counts, unaccounted


def object_suffix(target: TargetConfig) -> str:
    """``.zst``, ``.gz.age``, ...: what was done to the stream, in order."""
    encryption = "" if target.encryption is None else "." + target.encryption.method
    return file_suffix(target.compression.algorithm) + encryption


async def _dump_globals(
    policy: Policy,
    info: ConnectionInfo,
    major: int,
    superuser: bool,
    target: TargetConfig,
    storages: Sequence[Storage],
    key: str,
) -> StreamResult:
    tool = await find_tool("pg_dumpall", major, policy.pg_bin_dirs)
    argv = [tool.path, "--globals-only", "--no-password", f"--database={info.database}"]
    if not superuser:
        # Only superusers can read pg_authid; roles are still dumped, without their password hashes.
        argv.append("--no-role-passwords")
        log.warning("globals without role passwords: the backup role is not a superuser", database=info.database)
    async with Child(argv, env=info.libpq_env()) as child:
        return await stream_to_storages(
            child.stdout_chunks(),
            storages,
            key,
            compress=compression_stage(target.compression),
            encrypt=encryption_stage(target.encryption),
            source_succeeded=child.wait_checked,
        )


async def backup_database(
    policy: Policy,
    target_name: str,
    tier: str,
    info: ConnectionInfo,
    *,
    clock: Clock = utcnow,
) -> LogicalManifest:
    """Back up the database ``info`` points at, cataloguing it under ``target_name``/``tier``.

    Raises :class:`PartialBackup` (after committing where it could) when some storages failed.
    """
    target = policy.target(target_name)
    all_storages = target_storages(policy, target_name)
    storages = list(all_storages)
    started_at = clock()
    started = time.monotonic()
    backup_id = keys.new_backup_id(started_at)
    log.info("backup started", target=target_name, tier=tier, id=backup_id, database=info.database)
    # Earlier runs' leftovers go while this run connects and dumps (a listing per storage is a round
    # trip to an object store, before pg_dump could start): they never include this run's objects,
    # which are newer than the grace. Awaited before the commit, so the run ends with them gone.
    cleaning = asyncio.create_task(clean_leftovers(all_storages, target_name, started_at, policy.leftover_grace))
    failures: dict[str, str] = {}
    progress = Progress(f"backup {target_name}", None)
    suffix = object_suffix(target)

    try:
        async with connected(info) as connection:
            facts = await server_facts(connection)
            major = server_major(facts.server_version_num)
            pg_dump = await find_tool("pg_dump", major, policy.pg_bin_dirs)
            counts: list[TableCount] = []
            kinds: dict[str, int] = {}
            tables: list[tuple[str, str]] = []
            dump_key = keys.dump_key(target_name, backup_id, suffix)
            # Rows are counted in pg_dump's output as it streams by, unless the compiled walker is
            # missing: then each table is scanned on the server, in the same snapshot.
            counter = DumpRowCounter() if dumpcount.FAST else None
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await connection.fetchval("SELECT pg_export_snapshot()")
                argv = [pg_dump.path, "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password"]

                async def facts_in_snapshot() -> None:
                    nonlocal counts, kinds, tables
                    tables = await dumped_tables(connection)
                    if counter is None:
                        counts = await count_rows(connection, tables)
                    kinds = await object_counts(connection)

                async with Child(argv, env=info.libpq_env()) as child:

                    async def dump() -> StreamResult:
                        chunks = child.stdout_chunks()
                        return await stream_to_storages(
                            chunks if counter is None else counting_rows(chunks, counter),
                            storages,
                            dump_key,
                            progress,
                            compress=compression_stage(target.compression),
                            encrypt=encryption_stage(target.encryption),
                            source_succeeded=child.wait_checked,
                        )

                    # The catalog queries read the same snapshot while pg_dump streams; the transaction
                    # stays open until pg_dump is done, so its snapshot import can never find it gone.
                    try:
                        async with asyncio.TaskGroup() as group:
                            dump_task = group.create_task(dump())
                            group.create_task(facts_in_snapshot())
                    except BaseExceptionGroup as group_failures:
                        raise _root_cause(group_failures) from None
                dump_result = dump_task.result()
                row_counts_from: RowCountSource = "snapshot"
                if counter is not None:
                    counts, unaccounted = streamed_counts(tables, counter)
                    row_counts_from = "dump"
                    if unaccounted:
                        log.warning(
                            "counting rows on the server for tables the dump's stream did not account for",
                            tables=len(unaccounted),
                            reason=counter.failure or "no complete data block in the archive",
                        )
                        by_name = {(c.schema_name, c.table): c for c in counts + await count_rows(connection, unaccounted)}
                        counts = [by_name[name] for name in tables]
                        row_counts_from = "dump+snapshot"
            failures.update(dump_result.failures)
            storages = [storage for storage in storages if storage.name in dump_result.committed]
            dump_stored = StoredObject(**asdict(dump_result.written))
            objects = {"dump": dump_stored}
            if target.globals:
                superuser = bool(await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
                globals_key = keys.globals_key(target_name, backup_id, suffix)
                globals_result = await _dump_globals(policy, info, major, superuser, target, storages, globals_key)
                failures.update(globals_result.failures)
                storages = [storage for storage in storages if storage.name in globals_result.committed]
                objects["globals"] = StoredObject(**asdict(globals_result.written), role_passwords=superuser)

        encryption = dump_result.encryption
        manifest = LogicalManifest(
            id=backup_id,
            target=target_name,
            tier=tier,
            database=info.database,
            server_version=facts.server_version,
            pg_dump_version=pg_dump.version,
            dbguardian_version=__version__,
            host=socket.gethostname(),
            started_at=started_at,
            finished_at=clock(),
            duration_seconds=round(time.monotonic() - started, 3),
            raw_size_bytes=dump_stored.raw_size_bytes,
            size_bytes=dump_stored.size_bytes,
            sha256=dump_stored.sha256,
            compression=Compression(algorithm=target.compression.algorithm, level=target.compression.effective_level),
            encryption=None if encryption is None else Encryption.model_validate(encryption, from_attributes=True),
            storage=[storage.name for storage in storages],
            objects=objects,
            tables=counts,
            row_counts_from=row_counts_from,
            object_counts=kinds,
            database_size_bytes=facts.database_size,
            encoding=facts.encoding,
            lc_collate=facts.lc_collate,
            lc_ctype=facts.lc_ctype,
            snapshot=snapshot,
        )
    except BaseException:
        # Nothing of a failed run may stay behind, committed object or not.
        with contextlib.suppress(Exception):
            await asyncio.shield(cleaning)
        await asyncio.shield(discard_objects(all_storages, target_name, backup_id))
        raise

    await cleaning
    manifest = await commit_everywhere(manifest, storages, all_storages, failures, "backup")
    progress.finish()
    log.info(
        "backup committed",
        target=target_name,
        tier=tier,
        id=backup_id,
        raw_bytes=manifest.raw_size_bytes,
        stored_bytes=manifest.size_bytes,
        seconds=manifest.duration_seconds,
        tables=len(counts),
        storage=manifest.storage,
        failed_storage=sorted(failures),
    )
    if failures:
        raise PartialBackup(manifest, failures)
    return manifest


M = TypeVar("M", bound=BaseManifest)


async def clean_leftovers(storages: Sequence[Storage], target_name: str, started_at: datetime, grace: timedelta) -> None:
    """Remove earlier runs' objects that never got a manifest; a storage that fails is logged, not fatal."""
    for storage in storages:
        try:
            await remove_leftovers(storage, target_name, started_at, grace)
        except OperationError as error:  # an unreachable storage fails at write time, with the others going on
            log.error("cannot clean leftovers", storage=storage.name, error=str(error))


async def commit_everywhere(
    manifest: M, storages: Sequence[Storage], all_storages: Sequence[Storage], failures: dict[str, str], what: str
) -> M:
    """Commit ``manifest`` on each of ``storages`` (those whose objects were written); failures go into
    ``failures``. Objects on every other storage are useless without a manifest and are removed now.
    Returns the manifest naming the storages it was committed on; raises when it was committed nowhere."""
    committed_on: list[str] = []
    for storage in storages:
        try:
            await commit_manifest(storage, manifest)
            committed_on.append(storage.name)
        except OperationError as error:
            failures[storage.name] = str(error)
    rest = [s for s in all_storages if s.name not in committed_on]
    await asyncio.shield(discard_objects(rest, manifest.target, manifest.id))
    if not committed_on:
        detail = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        raise OperationError(f"{what} {manifest.id} was committed nowhere: {detail}")
    if committed_on != manifest.storage:
        manifest = manifest.model_copy(update={"storage": committed_on})
    return manifest


async def discard_objects(storages: Sequence[Storage], target_name: str, backup_id: str) -> None:
    """Best-effort removal of everything a failed run wrote; later runs catch what this misses."""
    for storage in storages:
        try:
            for info in await storage.list(keys.backup_prefix(target_name, backup_id)):
                await storage.delete(info.key)
        except Exception as error:  # any storage failure: reported, and the caller's own error stays the one raised
            cleanup_failed("backup_objects", error, storage=storage.name, backup=keys.backup_prefix(target_name, backup_id))


def _root_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real failure of a task group (the others are usually its consequences)."""
    for error in _leaves(group):
        if isinstance(error, asyncpg.PostgresError | asyncpg.InterfaceError):
            return DatabaseError(f"reading the snapshot failed: {redact_text(str(error))}")
        if not isinstance(error, asyncio.CancelledError):
            return error
    return asyncio.CancelledError()


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found


async def run_backup(policy: Policy, target_name: str, tier: str = "manual", *, clock: Clock = utcnow) -> LogicalManifest:
    """Back up a target and record the attempt's outcome in ``state_dir`` (retention reads it)."""
    target = policy.target(target_name)
    attempted_at = clock()
    backup = backup_database(policy, target_name, tier, connection_info(target), clock=clock)
    return await recording_attempt(policy, target_name, tier, attempted_at, "backup", backup)


async def recording_attempt(
    policy: Policy, target_name: str, tier: str, attempted_at: datetime, what: str, backup: Awaitable[M]
) -> M:
    """Await ``backup`` (either kind) and record its outcome in ``state_dir``: success, partial (some
    storages failed: :class:`PartialBackup`) or failure with its reason (retention reads it)."""
    try:
        manifest = await backup
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        # The connection was lost or a catalog query failed after connecting.
        message = f"{what} of {target_name!r} failed: {redact_text(str(error))}"
        record_attempt(policy.state_dir, target_name, tier, attempted_at, "failure", message)
        raise DatabaseError(message) from None
    except PartialBackup as partial:
        record_attempt(policy.state_dir, target_name, tier, attempted_at, "partial", str(partial))
        raise
    except BaseException as error:
        reason = redact_text(str(error)) or type(error).__name__
        record_attempt(policy.state_dir, target_name, tier, attempted_at, "failure", reason)
        raise
    record_attempt(policy.state_dir, target_name, tier, attempted_at, "success")
    return manifest
