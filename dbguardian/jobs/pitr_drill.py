"""Point-in-time restore drills: prove the whole chain from the newest base backup to *now*, every time.

1. A restore point is created on the source and its WAL segment switched out and waited for on every
   storage (shipping the spool itself if no daemon does). The time that took is the recovery point the
   archive achieved: a restore could not have reached "now" any sooner.
2. The newest base backup (or the one given) is extracted into a throw-away data directory, recovery
   replays the archived WAL (``restore_command`` = ``dbguardian wal-fetch``) up to the restore point,
   and the server is promoted. It listens only on a private socket and port, archiving off.
3. The user's checks and ``amcheck`` run on the restored database; recovery must have reached the
   restore point's LSN. Fetch + replay + verify is the measured recovery time.
4. The server is stopped and its directory removed, whatever happened.

The restored server's authentication is replaced (``hba_file``: trust on its private socket only),
so the drill connects whatever the source's pg_hba.conf says, and no one else can.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import asyncpg

from dbguardian.catalog.wal import parse_lsn
from dbguardian.cleanup import cleanup_failed
from dbguardian.errors import OperationError
from dbguardian.logs import get_logger
from dbguardian.policy import DrillConfig, Policy
from dbguardian.postgres import ConnectionInfo, connected, connection_info
from dbguardian.restore.physical import PitrPlan, RecoveryTarget, prepare_pitr, start_and_wait
from dbguardian.restore.points import create_restore_point
from dbguardian.restore.verify import CheckResult, amcheck, user_checks
from dbguardian.throwaway import free_port, short_tempdir

log = get_logger("dbguardian.drill")

PREFIX = "dbg-pitr-drill-"
RECOVERY_TIMEOUT = 3600.0


def _os_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def _prepare_workdir(os_user: str | None) -> tuple[Path, Path, Path]:
    """The drill's directory: the data directory, a private socket directory and a trust-only hba file."""
    base = short_tempdir(PREFIX)
    socket_dir = base / "sock"
    socket_dir.mkdir(mode=0o700)
    hba = base / "pg_hba.conf"
    hba.write_text("# dbguardian PITR drill: the private socket only\nlocal all all trust\n")
    hba.chmod(0o600)
    if os_user is not None:
        owner = pwd.getpwnam(os_user)
        for path in (base, socket_dir, hba):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    return base, socket_dir, hba


def _stop(plan: PitrPlan) -> None:
    argv = [str(plan.bin_dir / "pg_ctl"), "-D", str(plan.pgdata), "-m", "immediate", "-w", "stop"]
    if plan.os_user is not None and os.geteuid() == 0:
        argv = ["runuser", "-u", plan.os_user, "--", *argv]
    subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _remove(base: Path, plan: PitrPlan | None) -> None:
    if plan is not None:
        try:
            _stop(plan)
        except (OSError, subprocess.SubprocessError) as error:
            cleanup_failed("scratch_cluster", error, directory=str(base), left="a running server")
    if not base.name.startswith(PREFIX):  # only ever the directory this module created
        return
    shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        cleanup_failed("scratch_cluster", "directory not fully removed", directory=str(base))


async def _superuser_connection(info: ConnectionInfo) -> ConnectionInfo:
    """The restored cluster's bootstrap superuser (amcheck needs it), found through the target's role."""
    async with connected(info) as connection:
        name = await connection.fetchval("SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY oid LIMIT 1")
    if name is None:
        return info
    return ConnectionInfo(dsn=info.dsn.replace(f"postgresql://{_user(info)}@", f"postgresql://{name}@", 1),
                          password=None, database=info.database)  # fmt: skip


def _user(info: ConnectionInfo) -> str:
    return info.libpq_env().get("PGUSER", "postgres")


async def run_pitr_drill(
    policy: Policy, target_name: str, config: DrillConfig, backup_id: str | None, timings: dict[str, float]
) -> tuple[list[CheckResult], dict[str, object]]:
    """Run the drill; returns its checks and what it measured (phase durations go into ``timings``)."""
    target = policy.target(target_name)
    source = connection_info(target)
    point_name = f"dbguardian-drill-{secrets.token_hex(4)}"
    asked = time.monotonic()
    point = await create_restore_point(policy, target_name, point_name, wait=True)
    archive_latency = round(time.monotonic() - asked, 3)
    os_user = _os_user()
    base, socket_dir, hba = await asyncio.to_thread(_prepare_workdir, os_user)
    plan: PitrPlan | None = None
    try:
        phase = time.monotonic()
        plan = await prepare_pitr(
            policy,
            target_name,
            base / "data",
            backup_ref=backup_id or "latest",
            target=RecoveryTarget("name", point.name),
            identity=config.identity_file,
            port=free_port(),
            socket_dir=socket_dir,
            extra_settings={"hba_file": str(hba), "listen_addresses": ""},
            os_user=os_user,
            policy_path=policy.source_path,
        )
        timings["fetch"] = round(time.monotonic() - phase, 3)
        phase = time.monotonic()
        reached = await start_and_wait(plan, timeout=RECOVERY_TIMEOUT)
        timings["restore"] = round(time.monotonic() - phase, 3)
        phase = time.monotonic()
        restored = ConnectionInfo(
            dsn=f"postgresql://{_user(source)}@/{source.database}?host={socket_dir}&port={plan.port}",
            password=None,
            database=source.database,
        )
        checks = [_reached_check(point.lsn, reached.reached_lsn)]
        admin = await _superuser_connection(restored)
        async with connected(admin) as connection:
            checks += await user_checks(connection, config)
            if config.amcheck:
                checks.append(await amcheck(connection))
        timings["verify"] = round(time.monotonic() - phase, 3)
        measured: dict[str, object] = {
            "backup_id": plan.backup_id,
            "restore_point": point.name,
            "restore_point_lsn": point.lsn,
            "reached_lsn": reached.reached_lsn,
            "reached_time": reached.reached_time,
            "rpo_seconds": archive_latency,
        }
        return checks, measured
    except asyncpg.PostgresError as error:
        raise OperationError(f"the restored server refused the drill's checks: {error}") from None
    finally:
        await asyncio.shield(asyncio.to_thread(_remove, base, plan))


def _reached_check(point_lsn: str, reached_lsn: str | None) -> CheckResult:
    expected = f"recovery replays up to the restore point at {point_lsn}"
    if reached_lsn is None:
        return CheckResult("recovery point", False, "the restored server reports no replayed LSN", expected)
    ok = parse_lsn(reached_lsn) >= parse_lsn(point_lsn)
    return CheckResult("recovery point", ok, f"replayed up to {reached_lsn}", expected)
