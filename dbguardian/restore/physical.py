"""Point-in-time recovery: a base backup extracted into an empty data directory, recovery settings that
fetch WAL through ``dbguardian wal-fetch``, and (optionally) the server started and waited for.

The decisions are pure functions (tested without a server): which base backup fits a recovery target
(:func:`choose_backup`), whether the target is reachable from it and from the archived WAL
(:func:`check_target`, :func:`check_archive`), what goes into ``postgresql.auto.conf``
(:func:`render_settings`), and which tar members may be extracted (:func:`check_member`).

Target times must carry a zone (``2026-12-04T13:50:00Z``, ``…+01:00``): a time without one is refused
rather than guessed (:func:`parse_target_time`), because an hour off restores the wrong data silently.

PostgreSQL runs ``restore_command`` as the data directory's owner: that user must be able to run the
dbguardian executable, read the policy, the storage and the identity file. :func:`prepare_pitr` proves it
before it returns by fetching the backup's first WAL segment as that user, so a permission problem is one
clear error now, not a recovery that ends early later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from dbguardian.catalog import Backup, Catalog, PhysicalManifest
from dbguardian.catalog.archive import ArchivedWal, list_wal, newest_segment
from dbguardian.catalog.wal import DEFAULT_SEGMENT_SIZE, format_lsn, parse_lsn, parse_segment_name, segment_of_lsn
from dbguardian.errors import BackupNotFound, OperationError, RestoreRefused, UsageError
from dbguardian.logs import get_logger
from dbguardian.policy import DEFAULT_POLICY_PATH, Policy
from dbguardian.postgres import find_exact_tool, find_tool
from dbguardian.restore.combine import chain_on, combine_chain, extract_one
from dbguardian.restore.extract import check_member as check_member
from dbguardian.restore.extract import extract_tar as extract_tar
from dbguardian.selfexec import dbguardian_executable
from dbguardian.storage import Storage, target_storages
from dbguardian.throwaway import free_port
from dbguardian.walfile import PREFETCH_DIR, stop_queue

log = get_logger("dbguardian.restore.physical")

TargetKind = Literal["time", "name", "lsn", "latest"]
MAX_RESTORE_POINT_NAME = 63
NOT_REACHED = "recovery ended before configured recovery target was reached"
SETTINGS_MARK = "# dbguardian point-in-time recovery"


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops: a moment, a restore point, an LSN, or the end of the archived WAL."""

    kind: TargetKind
    value: str | None = None
    """ISO time (with zone), restore point name, LSN text; None for ``latest``."""

    def settings(self) -> dict[str, str]:
        """The ``recovery_target_*`` settings (unquoted values)."""
        if self.kind == "latest":
            return {}
        assert self.value is not None
        if self.kind == "time":
            return {"recovery_target_time": pg_time(parse_target_time(self.value))}
        return {f"recovery_target_{self.kind}": self.value}

    def describe(self) -> dict[str, str | None]:
        return {"kind": self.kind, "value": self.value}


def parse_target_time(text: str) -> datetime:
    """ISO 8601 with a zone (``Z`` or ``±HH:MM``) → aware datetime; a time without a zone is refused."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{text!r} is not an ISO 8601 time like 2026-12-04T13:50:00Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"{text!r} has no time zone: add Z (UTC) or an offset like +01:00")
    return moment


def pg_time(moment: datetime) -> str:
    """As PostgreSQL reads a timestamptz: ``2026-12-04 13:50:00.123456+00:00``."""
    return moment.astimezone(UTC).isoformat(sep=" ")


def make_target(
    *, to_time: str | None = None, to_name: str | None = None, to_lsn: str | None = None, to_latest: bool = False
) -> RecoveryTarget:
    """One of the ``--to-*`` options (none → latest); two or more is a usage error."""
    given = [kind for kind, value in (("time", to_time), ("name", to_name), ("lsn", to_lsn)) if value is not None]
    if to_latest:
        given.append("latest")
    if len(given) > 1:
        raise UsageError("give one of --to-time, --to-name, --to-lsn, --to-latest")
    if to_time is not None:
        return RecoveryTarget("time", parse_target_time(to_time).astimezone(UTC).isoformat())
    if to_name is not None:
        check_point_name(to_name)
        return RecoveryTarget("name", to_name)
    if to_lsn is not None:
        try:
            return RecoveryTarget("lsn", format_lsn(parse_lsn(to_lsn)))
        except ValueError as error:
            raise UsageError(str(error)) from None
    return RecoveryTarget("latest")


def check_point_name(name: str) -> str:
    """A restore point name PostgreSQL keeps whole (≤ 63 bytes) and a settings file can hold."""
    if not name or len(name.encode()) > MAX_RESTORE_POINT_NAME:
        raise UsageError(f"a restore point name is 1 to {MAX_RESTORE_POINT_NAME} bytes, not {len(name.encode())}")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise UsageError("a restore point name must not contain control characters")
    return name


# Pure decisions.


def _newest(candidates: Iterable[Backup[PhysicalManifest]]) -> Backup[PhysicalManifest] | None:
    return max(candidates, key=lambda record: (record.manifest.finished_at, record.id), default=None)


def choose_backup(
    backups: Sequence[Backup[PhysicalManifest]], target: RecoveryTarget, reference: str = "latest"
) -> Backup[PhysicalManifest]:
    """The base backup to start from: the one given by id, else the newest that ends before the target."""
    if not backups:
        raise BackupNotFound("no physical (base) backup exists; take one with `dbguardian backup TARGET --physical`")
    if reference != "latest":
        for record in backups:
            if record.id == reference:
                check_target(record.manifest, target)
                return record
        raise BackupNotFound(f"no base backup {reference!r} (physical backups: {', '.join(r.id for r in backups)})")
    chosen: Backup[PhysicalManifest] | None
    if target.kind == "time":
        assert target.value is not None
        moment = parse_target_time(target.value)
        chosen = _newest(record for record in backups if record.manifest.consistent_at <= moment)
    elif target.kind == "lsn":
        assert target.value is not None
        lsn = parse_lsn(target.value)
        chosen = _newest(record for record in backups if parse_lsn(record.manifest.stop_lsn) <= lsn)
    else:
        chosen = _newest(backups)
    if chosen is None:
        oldest = min(backups, key=lambda record: record.manifest.finished_at)
        check_target(oldest.manifest, target)  # raises, naming the oldest backup's end
        raise AssertionError("unreachable")
    check_target(chosen.manifest, target)
    return chosen


def check_target(manifest: PhysicalManifest, target: RecoveryTarget) -> None:
    """Refuse a target before the backup's consistency point: recovery cannot stop inside the backup."""
    if target.kind == "time":
        assert target.value is not None
        moment = parse_target_time(target.value)
        if moment < manifest.consistent_at:
            raise RestoreRefused(
                f"target time {_iso(moment)} is before the end of base backup {manifest.id} "
                f"({_iso(manifest.consistent_at)}); no base backup ends before it"
            )
    elif target.kind == "lsn":
        assert target.value is not None
        if parse_lsn(target.value) < parse_lsn(manifest.stop_lsn):
            raise RestoreRefused(
                f"target LSN {target.value} is before the end of base backup {manifest.id} (stop LSN {manifest.stop_lsn})"
            )


def check_archive(
    target: RecoveryTarget, newest: ArchivedWal | None, manifest: PhysicalManifest, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> None:
    """Refuse a target past the archived WAL (recovery would end early), or any target when the WAL the
    backup itself needs is not archived."""
    stop_segment = segment_of_lsn(manifest.timeline, parse_lsn(manifest.stop_lsn), segment_size)
    if newest is None or parse_segment_name(newest.name, segment_size) < stop_segment:
        have = "none" if newest is None else newest.name
        raise RestoreRefused(
            f"the WAL base backup {manifest.id} needs (up to {stop_segment.name(segment_size)}) is not archived "
            f"(newest archived segment: {have})"
        )
    where = f"newest segment {newest.name} archived at {_iso(newest.modified)}"
    if target.kind == "time":
        assert target.value is not None
        moment = parse_target_time(target.value)
        if moment > newest.modified:
            raise RestoreRefused(f"target time {_iso(moment)} is past the archived WAL ({where})")
    elif target.kind == "lsn":
        assert target.value is not None
        end = parse_segment_name(newest.name, segment_size).start_lsn(segment_size) + segment_size
        if parse_lsn(target.value) >= end:
            raise RestoreRefused(f"target LSN {target.value} is past the archived WAL ({where}, ends at {format_lsn(end)})")


def quote_conf(value: str) -> str:
    """A postgresql.conf string literal: single quotes, embedded quotes doubled, no line breaks."""
    if any((ord(char) < 32 and char != "\t") or ord(char) == 127 for char in value):
        raise UsageError(f"a setting value cannot contain line breaks or control characters: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def shell_word(word: str) -> str:
    """One argument of restore_command (PostgreSQL runs it with /bin/sh): single-quoted for the shell."""
    if word and all(char.isalnum() or char in "/._-+=:@%" for char in word):
        return word
    return "'" + word.replace("'", "'\"'\"'") + "'"


def restore_command(executable: Sequence[str], policy_path: Path, target_name: str, identity: Path | None) -> str:
    words = [*executable, "wal-fetch", "--policy", str(policy_path), "--target", target_name]
    if identity is not None:
        words += ["--identity", str(identity)]
    return " ".join(shell_word(word) for word in words) + " %f %p"


def render_settings(
    *,
    command: str,
    target: RecoveryTarget,
    port: int,
    socket_dir: Path,
    keep_archiving: bool = False,
    listen: str = "127.0.0.1",
    extra: Mapping[str, str] | None = None,
) -> str:
    """The lines appended to ``postgresql.auto.conf`` (the last value of a setting wins)."""
    settings: dict[str, str] = {"restore_command": command, **target.settings()}
    settings |= {
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        "port": str(port),
        "unix_socket_directories": str(socket_dir),
        "listen_addresses": listen,
    }
    if not keep_archiving:
        settings["archive_mode"] = "off"
    settings |= dict(extra or {})
    lines = [SETTINGS_MARK, *(f"{name} = {quote_conf(value)}" for name, value in settings.items())]
    return "\n".join(lines) + "\n"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# I/O.


@dataclass
class PitrPlan:
    """A prepared data directory, ready to start."""

    backup_id: str
    target_name: str
    pgdata: Path
    recovery_target: RecoveryTarget
    port: int
    socket_dir: Path
    os_user: str | None
    pg_version: int
    bin_dir: Path
    log_file: Path
    psql: Path
    """psql for the readiness checks: beside pg_ctl when there is one, else a client of that major or newer."""
    started_at: float = field(default_factory=time.monotonic)

    def start_command(self) -> str:
        argv = [str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_file), "start"]
        if self.os_user is not None and os.geteuid() == 0:
            argv = ["runuser", "-u", self.os_user, "--", *argv]
        return " ".join(shell_word(word) for word in argv)


@dataclass
class PitrReport:
    backup_id: str
    target: str
    pgdata: str
    recovery_target: dict[str, str | None]
    started: bool
    reached_lsn: str | None
    reached_time: str | None
    timeline: int | None
    seconds: float
    port: int | None
    socket_dir: str | None = None
    """Where the restored server's unix socket is (``psql -h <socket_dir> -p <port>``)."""
    start_command: str | None = None
    """When not started: the command that starts it (as the data directory's owner)."""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _as_user(os_user: str | None, argv: list[str]) -> list[str]:
    if os_user is None or os.geteuid() != 0 or pwd.getpwnam(os_user).pw_uid == 0:
        return argv
    return ["runuser", "-u", os_user, "--", *argv]


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)


def readable_by(path: Path, os_user: str | None) -> bool:
    if os_user is None or os.geteuid() != 0:
        return os.access(path, os.R_OK)
    return _run(_as_user(os_user, ["test", "-r", str(path)])).returncode == 0


def _chown_tree(root: Path, os_user: str) -> None:
    owner = pwd.getpwnam(os_user)
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.lchown(Path(directory) / name, owner.pw_uid, owner.pw_gid)
    os.chown(root, owner.pw_uid, owner.pw_gid)


def _with_chain(
    storages: Sequence[Storage], physical: Sequence[Backup[PhysicalManifest]], backup_id: str
) -> tuple[list[Storage], list[PhysicalManifest]]:
    """The storages from the first that holds ``backup_id``'s whole chain on, and that chain; else the
    first storage's refusal (naming its missing link)."""
    refusal: BackupNotFound | None = None
    for index, storage in enumerate(storages):
        try:
            return list(storages[index:]), chain_on(storage.name, physical, backup_id)
        except BackupNotFound as error:
            refusal = refusal or error
    assert refusal is not None
    raise refusal


async def _physical_backups(policy: Policy, target_name: str) -> list[Backup[PhysicalManifest]]:
    records = await Catalog(target_storages(policy, target_name)).backups(target_name)
    return [Backup(r.manifest, r.storages) for r in records if isinstance(r.manifest, PhysicalManifest)]


async def _newest_archived(policy: Policy, target_name: str) -> ArchivedWal | None:
    found: list[ArchivedWal] = []
    for storage in target_storages(policy, target_name):
        newest = newest_segment(await list_wal(storage, target_name))
        if newest is not None:
            found.append(newest)
    return max(found, key=lambda item: (item.name, item.modified), default=None)


def _probe_fetch(
    command: Sequence[str],
    policy_path: Path,
    target_name: str,
    identity: Path | None,
    segment: str,
    pgdata: Path,
    os_user: str | None,
) -> None:
    """Run wal-fetch as the server's OS user once (the backup's first segment): proves it can run
    dbguardian and read the policy, the storage and the identity file. The call starts the prefetch
    queue's fetcher, which then has the next segments downloaded by the time the server asks, and the
    segment it fetched goes back into the queue for the server's first request."""
    dest = pgdata / "pg_wal" / f".dbguardian-probe-{segment}"
    argv = [*command, "wal-fetch", "--policy", str(policy_path), "--target", target_name]
    if identity is not None:
        argv += ["--identity", str(identity)]
    try:
        result = _run(_as_user(os_user, [*argv, segment, str(dest)]))
        if result.returncode == 0:
            with contextlib.suppress(OSError):
                dest.replace(dest.parent / PREFETCH_DIR / segment)
    except OSError as error:
        raise OperationError(f"cannot run wal-fetch as {os_user or 'this user'}: {error}") from None
    finally:
        dest.unlink(missing_ok=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        why = lines[-1][-300:] if lines else f"exit code {result.returncode}"
        raise OperationError(
            f"restore_command would fail: wal-fetch of {segment} as OS user {os_user or 'current'} failed ({why}); "
            "that user must be able to run dbguardian and read the policy, the storage and the identity file"
        )


async def prepare_pitr(
    policy: Policy,
    target_name: str,
    pgdata: Path,
    *,
    backup_ref: str = "latest",
    target: RecoveryTarget,
    identity: Path | None = None,
    port: int | None = None,
    socket_dir: Path | None = None,
    keep_archiving: bool = False,
    extra_settings: Mapping[str, str] | None = None,
    os_user: str | None = None,
    policy_path: Path | None = None,
) -> PitrPlan:
    """Choose and check the base backup, extract it into the empty ``pgdata``, write the recovery settings."""
    began = time.monotonic()
    policy.target(target_name)
    if os_user is None and os.geteuid() == 0:
        os_user = "postgres"
    if os_user is not None:
        try:
            pwd.getpwnam(os_user)
        except KeyError:
            raise UsageError(f"no OS user {os_user!r} to own the data directory") from None
    pgdata = pgdata.absolute()
    if pgdata.exists() and (not pgdata.is_dir() or any(pgdata.iterdir())):
        raise RestoreRefused(f"{pgdata} is not an empty directory; point-in-time restore needs an empty one")
    if identity is not None:
        identity = identity.absolute()
        if not identity.is_file():
            raise UsageError(f"identity file {identity} does not exist")
        if not readable_by(identity, os_user):
            raise UsageError(
                f"identity file {identity} is not readable by OS user {os_user}, who runs restore_command; "
                "give that user read access (the file is passed by path, never copied)"
            )
    if policy_path is None:  # the file it was loaded from, else the CLI's default
        policy_path = policy.source_path or Path(os.environ.get("DBGUARDIAN_POLICY") or DEFAULT_POLICY_PATH)
    policy_path = policy_path.absolute()
    if not policy_path.is_file():
        raise UsageError(f"policy {policy_path} does not exist; restore_command reads it (pass its path)")
    if not readable_by(policy_path, os_user):
        raise UsageError(f"policy {policy_path} is not readable by OS user {os_user}, who runs restore_command")

    physical = await _physical_backups(policy, target_name)
    chosen = choose_backup(physical, target, backup_ref)
    manifest = chosen.manifest
    check_archive(target, await _newest_archived(policy, target_name), manifest)
    pg_ctl = await find_exact_tool("pg_ctl", manifest.pg_version, policy.pg_bin_dirs, needed_by=f"base backup {manifest.id}")
    psql = Path(pg_ctl.path).parent / "psql"
    if not psql.exists():  # a server-only build: any psql of this major or newer talks to it
        psql = Path((await find_tool("psql", manifest.pg_version, policy.pg_bin_dirs)).path)
    stored = manifest.objects.get("base")
    if stored is None:
        raise OperationError(f"base backup {manifest.id} has no 'base' object")
    storages = [s for s in target_storages(policy, target_name) if s.name in chosen.storages]
    if not storages:
        raise BackupNotFound(f"base backup {manifest.id} is on no storage of {target_name!r}")
    links = [manifest]
    if manifest.incremental_of is not None:  # from the first storage that holds the whole chain
        storages, links = _with_chain(storages, physical, manifest.id)

    created = not pgdata.exists()
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    owner = None
    if os_user is not None and os.geteuid() == 0:
        entry = pwd.getpwnam(os_user)
        owner = (entry.pw_uid, entry.pw_gid)
    try:
        # pg_wal first, the server user's: the probe (which starts the prefetch queue) runs while the tar
        # is extracted, and extraction gives every file to that user as it writes it.
        pg_wal = pgdata / "pg_wal"
        pg_wal.mkdir(mode=0o700, exist_ok=True)
        if owner is not None:
            os.chown(pgdata, *owner)
            os.chown(pg_wal, *owner)
        command = dbguardian_executable()
        first = segment_of_lsn(manifest.timeline, parse_lsn(manifest.start_lsn)).name()
        probe = asyncio.create_task(
            asyncio.to_thread(_probe_fetch, command, policy_path, target_name, identity, first, pgdata, os_user)
        )
        try:
            if len(links) == 1:
                members = await extract_one(manifest, storages[0], pgdata, identity, owner=owner)
            else:  # an incremental: its chain combined (pg_combinebackup)
                members = await combine_chain(links, storages[0], pgdata, identity, policy.pg_bin_dirs)
        finally:
            with contextlib.suppress(OperationError):
                await probe  # its error, if any, is raised below once the extraction's is known
        probe.result()
        if not (pgdata / "PG_VERSION").is_file():
            raise OperationError(f"base backup {manifest.id} holds no data directory (no PG_VERSION)")
        for stale in ("postmaster.pid", "postmaster.opts"):
            (pgdata / stale).unlink(missing_ok=True)
        (pg_wal / "archive_status").mkdir(parents=True, exist_ok=True)
        if socket_dir is None:
            socket_dir = Path(tempfile.mkdtemp(prefix="dbg-pitr-", dir="/tmp"))
        socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        port = port or free_port()
        settings = render_settings(
            command=restore_command(command, policy_path, target_name, identity),
            target=target,
            port=port,
            socket_dir=socket_dir,
            keep_archiving=keep_archiving,
            extra=extra_settings,
        )
        with (pgdata / "postgresql.auto.conf").open("a") as conf:
            conf.write("\n" + settings)
        (pgdata / "recovery.signal").write_text("")
        if owner is not None:
            assert os_user is not None
            _chown_tree(pgdata, os_user)
            os.chown(socket_dir, *owner)
    except BaseException:
        # Leave nothing half-made: the directory was empty (or absent) before.
        await asyncio.to_thread(stop_queue, pgdata / "pg_wal")
        for child in list(pgdata.iterdir()) if pgdata.exists() else []:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        if created:
            shutil.rmtree(pgdata, ignore_errors=True)
        raise
    log.info("base backup extracted", backup=manifest.id, pgdata=str(pgdata), members=members, port=port)
    return PitrPlan(
        backup_id=manifest.id,
        target_name=target_name,
        pgdata=pgdata,
        recovery_target=target,
        port=port,
        socket_dir=socket_dir,
        os_user=os_user,
        pg_version=manifest.pg_version,
        bin_dir=Path(pg_ctl.path).parent,
        log_file=pgdata / "dbguardian-pitr.log",
        started_at=began,
        psql=psql,
    )


def _psql(plan: PitrPlan, sql: str) -> str | None:
    argv = [
        str(plan.psql), "-X", "-q", "-A", "-t", "-h", str(plan.socket_dir), "-p", str(plan.port),
        "-d", "postgres", "-c", sql,
    ]  # fmt: skip
    if plan.os_user is not None:
        argv[-4:-4] = ["-U", plan.os_user]
    result = _run(_as_user(plan.os_user, argv), timeout=30)
    return result.stdout.strip() if result.returncode == 0 else None


def _server_running(plan: PitrPlan) -> bool:
    result = _run(_as_user(plan.os_user, [str(plan.bin_dir / "pg_ctl"), "-D", str(plan.pgdata), "status"]))
    return result.returncode == 0


def _log_reason(log_file: Path) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return "no server log"
    if NOT_REACHED in text:
        return "the recovery target was not reached in the archived WAL (" + NOT_REACHED + ")"
    fatal = [line for line in text.splitlines() if "FATAL" in line or "PANIC" in line]
    return (fatal[-1] if fatal else (text.strip().splitlines() or ["empty log"])[-1])[-400:]


async def start_and_wait(plan: PitrPlan, *, timeout: float = 600) -> PitrReport:
    """Start the server as the data directory's owner and wait until recovery reached the target and the
    server was promoted; raise with the server log's reason when it stopped instead."""
    argv = [
        str(plan.bin_dir / "pg_ctl"), "-D", str(plan.pgdata), "-l", str(plan.log_file), "-w",
        "-t", str(int(max(timeout, 1))), "start",
    ]  # fmt: skip
    if plan.os_user is not None and os.geteuid() == 0 and not plan.log_file.exists():
        plan.log_file.touch(mode=0o600)
        owner = pwd.getpwnam(plan.os_user)
        os.chown(plan.log_file, owner.pw_uid, owner.pw_gid)
    result = await asyncio.to_thread(_run, _as_user(plan.os_user, argv), timeout + 30)
    if result.returncode != 0 and not await asyncio.to_thread(_server_running, plan):
        raise OperationError(f"the restored server did not start: {_log_reason(plan.log_file)} (log: {plan.log_file})")
    # pg_ctl -w gives up after its timeout while a long recovery still runs: the server's state decides.
    deadline = time.monotonic() + timeout
    while True:
        state = await asyncio.to_thread(_psql, plan, "SELECT pg_is_in_recovery()")
        if state == "f":
            break
        if state is None and not await asyncio.to_thread(_server_running, plan):
            raise OperationError(f"recovery failed: {_log_reason(plan.log_file)} (log: {plan.log_file})")
        if time.monotonic() > deadline:
            raise OperationError(f"recovery did not finish within {timeout:.0f}s (log: {plan.log_file})")
        await asyncio.sleep(0.1)
    # Promoted: the prefetch queue's fetcher is no longer needed; its segments beyond the target neither.
    await asyncio.to_thread(stop_queue, plan.pgdata / "pg_wal")
    row = await asyncio.to_thread(
        _psql,
        plan,
        "SELECT coalesce(pg_last_wal_replay_lsn()::text, ''), coalesce(to_char(pg_last_xact_replay_timestamp() "
        "AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), ''), "
        "substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
    )
    lsn, moment, timeline = (row or "||").split("|")
    return PitrReport(
        backup_id=plan.backup_id,
        target=plan.target_name,
        pgdata=str(plan.pgdata),
        recovery_target=plan.recovery_target.describe(),
        started=True,
        reached_lsn=lsn or None,
        reached_time=moment or None,
        timeline=int(timeline, 16) if timeline else None,
        seconds=round(time.monotonic() - plan.started_at, 3),
        port=plan.port,
        socket_dir=str(plan.socket_dir),
    )


async def finish_pitr(plan: PitrPlan, *, start: bool = False, timeout: float = 600) -> PitrReport:
    """After :func:`prepare_pitr`: with ``start``, :func:`start_and_wait`; else the report of a data
    directory left ready, with the command that starts it."""
    if start:
        return await start_and_wait(plan, timeout=timeout)
    return PitrReport(
        backup_id=plan.backup_id,
        target=plan.target_name,
        pgdata=str(plan.pgdata),
        recovery_target=plan.recovery_target.describe(),
        started=False,
        reached_lsn=None,
        reached_time=None,
        timeline=None,
        seconds=round(time.monotonic() - plan.started_at, 3),
        port=plan.port,
        socket_dir=str(plan.socket_dir),
        start_command=plan.start_command(),
    )
