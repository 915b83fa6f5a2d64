"""One base backup: ``pg_basebackup`` streamed as tar through compression (and encryption) into every
storage of the target, committed only once the WAL it needs is archived on each of them.

``pg_basebackup -D - -Ft -X none`` writes the main tablespace as one tar stream on stdout (the
``backup_manifest`` injected at its end), with no WAL: the base backup is restorable only together with
the WAL archive from its start LSN to its stop LSN, which the WAL shipper keeps on the same storages.
Nothing is written to local disk. With ``-X none`` pg_basebackup prints neither LSN (its ``-v`` lines
``write-ahead log start/end point`` appear only when it fetches WAL itself), so they are read from the
stream as it goes by (:class:`TarScanner`): ``backup_label`` (start LSN, timeline, our label) and the
``WAL-Ranges`` at the tail of ``backup_manifest`` (stop LSN). ``PG_VERSION`` comes from the stream too.

The run, in order:

1. the server is checked (:func:`server_problems`): ``archive_mode`` on, a role that may replicate,
   a WAL sender slot, a primary, and no tablespace outside the data directory (not supported yet:
   ``-D -`` streams the main tablespace only, so such a backup would silently lack data);
2. pg_basebackup streams into ``<target>/<id>/base.tar<suffix>`` (object ``base``). The server itself
   waits until the archiver has put the stop segment into the spool; if archiving is broken it waits
   forever, so a watchdog kills pg_basebackup after ``wal.wait_for_wal`` of that wait;
3. the WAL from the start segment to the stop segment and the ``.backup`` history file must be on every
   storage that holds the tar: a shipper pass (``ship``: the caller passes
   ``archiving.ship.ship_spool``, a sibling layer this module may not import) moves them out of the
   spool when no daemon does, and :func:`~dbguardian.catalog.archive.find_wal` confirms them, until
   ``wal.wait_for_wal``. A storage still missing WAL then is a failed storage (partial backup);
4. the manifest (kind ``physical``) is committed last, like a logical backup's.

A failed run leaves nothing (every object of the backup folder is discarded) and records the attempt in
``state_dir`` like a logical backup.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Protocol

import asyncpg

from dbguardian import __version__
from dbguardian.backup.basetar import (
    BackupPosition,
    TarScanner,
    backup_position,
    needed_wal,
    parse_backup_label,
    parse_wal_ranges,
    stop_segment,
)
from dbguardian.backup.codec import compression_stage, encryption_stage
from dbguardian.backup.incremental import Parent, incremental_parent, keep_backup_manifest
from dbguardian.backup.logical import (
    PartialBackup,
    clean_leftovers,
    commit_everywhere,
    discard_objects,
    object_suffix,
    recording_attempt,
)
from dbguardian.catalog import keys
from dbguardian.catalog.archive import find_wal
from dbguardian.catalog.manifest import (
    INCREMENTAL_FORMAT,
    WRITTEN_FORMAT,
    Compression,
    Encryption,
    PhysicalManifest,
    StoredObject,
)
from dbguardian.catalog.service import Catalog
from dbguardian.catalog.wal import check_segment_size, format_lsn
from dbguardian.errors import OperationError
from dbguardian.logs import get_logger
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.sink import StreamResult, stream_to_storages
from dbguardian.policy import Policy, TargetConfig, WalConfig
from dbguardian.postgres import ConnectionInfo, connected, connection_info, find_tool, server_major
from dbguardian.progress import Progress
from dbguardian.storage import Storage, target_storages
from dbguardian.units import format_duration

log = get_logger("dbguardian.backup.physical")

Clock = Callable[[], datetime]

LABEL_PREFIX = "dbguardian "
MANIFEST_KEPT = 64 * 1024 * 1024
"""How much of ``backup_manifest`` is kept: all of it (a line per file: ~20 MB for 100,000 files), which
the next incremental is based on; of a larger one only its end, where the ``WAL-Ranges`` are."""
SMALL_FILE = 64 * 1024
POLL_FIRST = 0.5
POLL_MAX = 5.0

_DEFAULT_TABLESPACES = frozenset({"pg_default", "pg_global"})
_ARCHIVE_WAIT = re.compile(r"still waiting for all required WAL segments to be archived \((\d+) seconds elapsed\)")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Shipper(Protocol):
    """What the backup needs of the WAL shipper: one pass over the spool up to a file name."""

    def __call__(self, policy: Policy, target_name: str, *, until: str | None = None) -> Awaitable[object]: ...


class PartialPhysicalBackup(PartialBackup):
    """The base backup is valid on some storages and failed on others (the run still fails: exit 1)."""

    what = "base backup"


# ----------------------------------------------------------------------------- pure: the server


@dataclass(frozen=True)
class ServerState:
    """What decides whether a base backup can be taken (read by :func:`read_server_state`)."""

    role: str
    superuser: bool
    replication: bool
    archive_mode: str
    max_wal_senders: int
    in_recovery: bool
    tablespaces: tuple[str, ...]
    """Every tablespace name of the cluster (``pg_default`` and ``pg_global`` included)."""


def extra_tablespaces(names: Sequence[str]) -> list[str]:
    """Tablespaces outside the data directory (every one but ``pg_default`` and ``pg_global``), sorted."""
    return sorted(name for name in names if name not in _DEFAULT_TABLESPACES)


def server_problems(state: ServerState, target_name: str) -> list[str]:
    """Why a base backup of this server cannot be taken (empty when it can), one sentence each."""
    problems: list[str] = []
    if state.archive_mode not in ("on", "always"):
        problems.append(f"archive_mode is {state.archive_mode}: run `dbguardian wal setup {target_name}`")
    if not (state.superuser or state.replication):
        problems.append(
            f"role {state.role!r} may not take base backups: it needs REPLICATION (ALTER ROLE ... REPLICATION) or superuser"
        )
    if state.max_wal_senders < 1:
        problems.append("max_wal_senders is 0: pg_basebackup needs a WAL sender (set it to 2 or more and restart)")
    if state.in_recovery:
        problems.append("the server is a standby: base backups from a standby are not supported yet; back up the primary")
    extra = extra_tablespaces(state.tablespaces)
    if extra:
        problems.append(
            f"tablespace{'s' if len(extra) > 1 else ''} {', '.join(extra)} outside the data directory: "
            "base backups of clusters with extra tablespaces are not supported yet"
        )
    return problems


# ----------------------------------------------------------------------------- pure: pg_basebackup's messages


def archive_wait_started(lines: Sequence[str], seen_at: Mapping[int, float]) -> float | None:
    """When (monotonic) the server began waiting for the archiver, from its first ``still waiting`` warning.

    ``seen_at`` maps a line index to when it was read; the warning says how long the wait has lasted.
    """
    for index, line in enumerate(lines):
        match = _ARCHIVE_WAIT.search(line)
        if match and index in seen_at:
            return seen_at[index] - int(match.group(1))
    return None


# ----------------------------------------------------------------------------- I/O


async def read_server_state(connection: asyncpg.Connection) -> ServerState:
    row = await connection.fetchrow(
        """SELECT current_user AS role, r.rolsuper, r.rolreplication,
                  current_setting('archive_mode') AS archive_mode,
                  current_setting('max_wal_senders')::int AS max_wal_senders,
                  pg_is_in_recovery() AS in_recovery,
                  ARRAY(SELECT spcname::text FROM pg_tablespace ORDER BY spcname) AS tablespaces
           FROM pg_roles r WHERE r.rolname = current_user"""
    )
    assert row is not None
    return ServerState(
        role=row["role"],
        superuser=row["rolsuper"],
        replication=row["rolreplication"],
        archive_mode=row["archive_mode"],
        max_wal_senders=row["max_wal_senders"],
        in_recovery=row["in_recovery"],
        tablespaces=tuple(row["tablespaces"]),
    )


@dataclass
class _ServerFacts:
    server_version: str
    major: int
    system_identifier: str
    segment_size: int
    cluster_size: int


async def _server_facts(connection: asyncpg.Connection) -> _ServerFacts:
    row = await connection.fetchrow(
        """SELECT current_setting('server_version') AS version,
                  current_setting('server_version_num')::int AS version_num,
                  (SELECT system_identifier FROM pg_control_system())::text AS system_identifier,
                  (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS segment_size,
                  (SELECT sum(pg_database_size(oid))::bigint FROM pg_database WHERE datallowconn) AS cluster_size"""
    )
    assert row is not None
    return _ServerFacts(
        server_version=row["version"],
        major=server_major(row["version_num"]),
        system_identifier=row["system_identifier"],
        segment_size=check_segment_size(int(row["segment_size"])),
        cluster_size=int(row["cluster_size"] or 0),
    )


async def _close_current_segment(connection: asyncpg.Connection, last_needed: str, segment_size: int) -> None:
    """If the last segment the backup needs is still being written, switch WAL so it gets archived.

    The server switches at the backup's end already; this covers a switch that had nothing to do. A
    role without EXECUTE on pg_switch_wal() then waits for ``archive_timeout`` instead.
    """
    current = await connection.fetchval("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    if current is None or current[8:] > last_needed[8:]:
        return
    try:
        await connection.execute("SELECT pg_switch_wal()")
        log.info("switched WAL so the backup's last segment is archived", segment=last_needed)
    except asyncpg.InsufficientPrivilegeError:
        log.warning("may not switch WAL; the last segment is archived at archive_timeout", segment=last_needed)


async def _present_everywhere(
    storages: Sequence[Storage], target_name: str, needed: Sequence[str], found: set[tuple[str, str]]
) -> dict[str, list[str]]:
    """Storage name → needed WAL files it still lacks (``found`` remembers hits across polls)."""
    missing: dict[str, list[str]] = {}
    for storage in storages:
        lacking = []
        for name in needed:
            if (storage.name, name) in found:
                continue
            try:
                present = await find_wal(storage, target_name, name) is not None
            except OperationError as error:
                log.warning("cannot look up WAL", storage=storage.name, file=name, error=str(error))
                present = False
            if present:
                found.add((storage.name, name))
            else:
                lacking.append(name)
        missing[storage.name] = lacking
    return missing


async def wait_for_wal(
    policy: Policy,
    target_name: str,
    storages: Sequence[Storage],
    needed: Sequence[str],
    *,
    timeout: float,
    ship: Shipper | None,
) -> dict[str, list[str]]:
    """Until every storage has every ``needed`` file, or ``timeout`` seconds; what each still lacks."""
    deadline = time.monotonic() + timeout
    found: set[tuple[str, str]] = set()
    pause = POLL_FIRST
    until = max(needed)
    while True:
        if ship is not None:
            try:
                report = await ship(policy, target_name, until=until)
            except OperationError as error:
                log.warning("shipping the spool failed; waiting for the daemon's shipper", error=str(error))
            else:
                failures = getattr(report, "failures", None)
                if failures:
                    log.warning("WAL shipping failed on some storages; retrying", failures=failures)
        missing = await _present_everywhere(storages, target_name, needed, found)
        if not any(missing.values()) or time.monotonic() >= deadline:
            return missing
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, POLL_MAX)


def wal_timeout_message(last_segment: str, wal: WalConfig) -> str:
    return (
        f"WAL up to {last_segment} not archived within {format_duration(wal.wait_for_wal)}: "
        "is archiving working? see `dbguardian wal status`"
    )


@dataclass
class _Streamed:
    result: StreamResult
    scanner: TarScanner
    tool_version: str
    finished_at: datetime


async def _scanned(chunks: AsyncIterator[bytes], scanner: TarScanner) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        scanner.feed(chunk)
        yield chunk


async def _watch_archive_wait(child: Child, limit: float, tripped: list[bool]) -> None:
    """Kill pg_basebackup once the server has waited ``limit`` seconds for its archiver (it never gives up)."""
    seen_at: dict[int, float] = {}
    while True:
        now = time.monotonic()
        for index in range(len(seen_at), len(child.stderr_lines)):
            seen_at[index] = now
        began = archive_wait_started(child.stderr_lines, seen_at)
        if began is not None and now - began >= limit:
            tripped.append(True)
            child.kill()
            return
        await asyncio.sleep(1)


async def _stream_base(
    policy: Policy,
    target: TargetConfig,
    wal: WalConfig,
    info: ConnectionInfo,
    major: int,
    backup_id: str,
    storages: Sequence[Storage],
    key: str,
    progress: Progress,
    *,
    clock: Clock,
    parent: Parent | None = None,
) -> _Streamed:
    tool = await find_tool("pg_basebackup", major, policy.pg_bin_dirs)
    argv = [
        tool.path,
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        f"--checkpoint={wal.checkpoint}",
        f"--label={LABEL_PREFIX}{backup_id}",
        "--no-password",
        "--verbose",
    ]
    if parent is not None:
        argv.append(f"--incremental={parent.backup_manifest}")
    scanner = TarScanner({"backup_label": SMALL_FILE, "PG_VERSION": 64, "backup_manifest": MANIFEST_KEPT})
    tripped: list[bool] = []
    async with Child(argv, env=info.libpq_env()) as child:
        watchdog = asyncio.create_task(_watch_archive_wait(child, wal.wait_for_wal.total_seconds(), tripped))
        try:
            result = await stream_to_storages(
                _scanned(child.stdout_chunks(), scanner),
                storages,
                key,
                progress,
                compress=compression_stage(target.compression),
                encrypt=encryption_stage(target.encryption),
                source_succeeded=lambda: _base_complete(child, scanner),
            )
        except OperationError:
            if tripped:
                raise OperationError(
                    wal_timeout_message("the backup's stop segment", wal) + " (still not in the spool)"
                ) from None
            raise
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
    return _Streamed(result, scanner, tool.version, clock())


async def _base_complete(child: Child, scanner: TarScanner) -> None:
    """pg_basebackup succeeded and its stream is a whole tar archive (checked before anything commits)."""
    await child.wait_checked()
    if not scanner.ended:
        raise OperationError("pg_basebackup's tar stream ended without the end-of-archive marker")
    for name in ("backup_label", "PG_VERSION", "backup_manifest"):
        if name not in scanner.captured:
            raise OperationError(f"pg_basebackup's tar stream has no {name}")


def _position(streamed: _Streamed, backup_id: str) -> tuple[BackupPosition, int]:
    scanner = streamed.scanner
    try:
        label = parse_backup_label(scanner.captured["backup_label"].decode())
        ranges = parse_wal_ranges(scanner.captured["backup_manifest"])
        position = backup_position(label, ranges, LABEL_PREFIX + backup_id)
        pg_version = int(scanner.captured["PG_VERSION"].decode().strip())
    except (ValueError, UnicodeDecodeError) as error:
        raise OperationError(f"base backup {backup_id}: {error}") from None
    return position, pg_version


async def backup_cluster(
    policy: Policy,
    target_name: str,
    tier: str,
    info: ConnectionInfo,
    *,
    clock: Clock = utcnow,
    ship: Shipper | None = None,
) -> PhysicalManifest:
    """Take a base backup of the cluster ``info`` points at, cataloguing it under ``target_name``/``tier``.

    Raises :class:`PartialPhysicalBackup` (after committing where it could) when some storages failed.
    """
    target = policy.target(target_name)
    wal = target.wal
    if wal is None:
        raise OperationError(f"target {target_name!r} has no 'wal:' block: a base backup needs its WAL archive")
    all_storages = target_storages(policy, target_name)
    storages = list(all_storages)
    started_at = clock()
    started = time.monotonic()
    backup_id = keys.new_backup_id(started_at)
    log.info("base backup started", target=target_name, tier=tier, id=backup_id, server=info.describe())
    await clean_leftovers(all_storages, target_name, started_at, policy.leftover_grace)
    failures: dict[str, str] = {}
    suffix = object_suffix(target)

    try:
        async with connected(info) as connection:
            problems = server_problems(await read_server_state(connection), target_name)
            if problems:
                raise OperationError(f"cannot take a base backup of {target_name!r}: " + "; ".join(problems))
            facts = await _server_facts(connection)
            progress = Progress(f"base backup {target_name}", facts.cluster_size or None)
            parent = None
            if target.tier_incremental(tier):
                parent = await incremental_parent(
                    connection,
                    facts.major,
                    facts.system_identifier,
                    await Catalog(all_storages).backups(target_name),
                    [storage.name for storage in all_storages],
                    policy.state_dir,
                    target_name,
                )
            streamed = await _stream_base(
                policy,
                target,
                wal,
                info,
                facts.major,
                backup_id,
                storages,
                keys.base_key(target_name, backup_id, suffix),
                progress,
                clock=clock,
                parent=parent,
            )
            failures.update(streamed.result.failures)
            storages = [storage for storage in storages if storage.name in streamed.result.committed]
            position, pg_version = _position(streamed, backup_id)
            if pg_version != facts.major:
                raise OperationError(f"PG_VERSION of the backup is {pg_version}, the server says {facts.major}")
            last_segment = stop_segment(position, facts.segment_size)
            await _close_current_segment(connection, last_segment, facts.segment_size)
        needed = needed_wal(position, facts.segment_size)
        log.info(
            "base backup streamed; waiting for its WAL on every storage",
            id=backup_id,
            start_lsn=format_lsn(position.start_lsn),
            stop_lsn=format_lsn(position.stop_lsn),
            wal=f"{needed[0]}..{last_segment}",
        )
        missing = await wait_for_wal(
            policy, target_name, storages, needed, timeout=wal.wait_for_wal.total_seconds(), ship=ship
        )
        lacking = {name: files for name, files in missing.items() if files}
        if lacking and len(lacking) == len(storages):
            raise OperationError(wal_timeout_message(last_segment, wal))
        for name, files in lacking.items():
            failures[name] = f"{wal_timeout_message(last_segment, wal)} (missing {', '.join(files)})"
        storages = [storage for storage in storages if storage.name not in lacking]

        base = StoredObject(**asdict(streamed.result.written))
        encryption = streamed.result.encryption
        manifest = PhysicalManifest(
            kind="physical",
            id=backup_id,
            target=target_name,
            tier=tier,
            database=info.database,
            server_version=facts.server_version,
            dbguardian_version=__version__,
            host=socket.gethostname(),
            started_at=started_at,
            finished_at=streamed.finished_at,
            duration_seconds=round(time.monotonic() - started, 3),
            raw_size_bytes=base.raw_size_bytes,
            size_bytes=base.size_bytes,
            sha256=base.sha256,
            compression=Compression(algorithm=target.compression.algorithm, level=target.compression.effective_level),
            encryption=None if encryption is None else Encryption.model_validate(encryption, from_attributes=True),
            storage=[storage.name for storage in storages],
            objects={"base": base},
            start_lsn=format_lsn(position.start_lsn),
            stop_lsn=format_lsn(position.stop_lsn),
            timeline=position.timeline,
            system_identifier=facts.system_identifier,
            pg_version=pg_version,
            format=WRITTEN_FORMAT if parent is None else INCREMENTAL_FORMAT,
            incremental_of=None if parent is None else parent.manifest.id,
            chain=[] if parent is None else parent.chain,
        )
    except BaseException:
        # Nothing of a failed run may stay behind, committed object or not.
        await asyncio.shield(discard_objects(all_storages, target_name, backup_id))
        raise

    manifest = await commit_everywhere(manifest, storages, all_storages, failures, "base backup")
    progress.finish()
    kept = streamed.scanner.captured["backup_manifest"]
    if len(kept) == streamed.scanner.sizes.get("backup_manifest"):  # whole: a next incremental may build on it
        await asyncio.to_thread(keep_backup_manifest, policy.state_dir, target_name, backup_id, kept)
    log.info(
        "base backup committed",
        target=target_name,
        tier=tier,
        id=backup_id,
        raw_bytes=manifest.raw_size_bytes,
        stored_bytes=manifest.size_bytes,
        seconds=manifest.duration_seconds,
        start_lsn=manifest.start_lsn,
        stop_lsn=manifest.stop_lsn,
        timeline=manifest.timeline,
        storage=manifest.storage,
        failed_storage=sorted(failures),
    )
    if failures:
        raise PartialPhysicalBackup(manifest, failures)
    return manifest


async def run_physical_backup(
    policy: Policy,
    target_name: str,
    tier: str = "manual",
    *,
    clock: Clock = utcnow,
    ship: Shipper | None = None,
) -> PhysicalManifest:
    """Take a base backup of a target and record the attempt's outcome in ``state_dir`` (retention reads it).

    ``ship``: one pass of the WAL shipper (``archiving.ship.ship_spool``), so the backup's WAL reaches the
    storages without the daemon running; without it the backup waits for the daemon's shipper.
    """
    target = policy.target(target_name)
    attempted_at = clock()
    backup = backup_cluster(policy, target_name, tier, connection_info(target), clock=clock, ship=ship)
    return await recording_attempt(policy, target_name, tier, attempted_at, "base backup", backup)
