"""Restore drills: restore a backup into a scratch database, check the data, measure recovery time.

The scratch database (or throw-away cluster) is always removed: after success, failure and
cancellation alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbguardian.catalog import Catalog, LogicalManifest, latest
from dbguardian.catalog.service import regular
from dbguardian.cleanup import cleanup_failed
from dbguardian.drill import pick_backup, scratch_name
from dbguardian.errors import DbguardianError, UsageError
from dbguardian.health import Verdict
from dbguardian.jobs.outcome import JobContext, JobKind, JobOutcome
from dbguardian.jobs.pitr_drill import run_pitr_drill
from dbguardian.logs import get_logger
from dbguardian.policy import DrillConfig, Policy, TargetConfig
from dbguardian.postgres import ConnectionInfo, connected, connection_info, major_of
from dbguardian.restore import Located, server_major_of
from dbguardian.restore.locate import pg_restore_for
from dbguardian.restore.pg_restore import archive, run_pg_restore
from dbguardian.restore.verify import CheckResult, amcheck, user_checks, verify_counts
from dbguardian.schedule import JobSpec
from dbguardian.scratch import admin_session, scratch_database, throwaway_server
from dbguardian.state import append_line
from dbguardian.storage import target_storages

log = get_logger("dbguardian.drill")


@dataclass
class DrillReport:
    target: str
    backup_id: str | None
    storage: str | None
    mode: str
    database: str | None
    started_at: str
    ok: bool = False
    error: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    rto_target_seconds: float | None = None
    rto_ok: bool | None = None
    kind: str = "logical"
    """``logical`` (a pg_dump backup into a scratch database) or ``pitr`` (base backup + WAL to a restore point)."""
    rpo_seconds: float | None = None
    """PITR drills: from creating the restore point until its WAL was on every storage (the recovery point achieved)."""
    recovery: dict[str, object] = field(default_factory=dict)
    """PITR drills: the restore point, its LSN and what recovery reached."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.error:
            return f"drill of {self.target} failed: {self.error}"
        failing = [c for c in self.checks if not c.ok]
        if failing:
            return f"drill of {self.target} failed checks: " + "; ".join(f"{c.name}: {c.observed}" for c in failing)
        if self.rto_ok is False:
            took = self.timings["total"]
            return f"drill of {self.target}: recovery took {took:.1f}s, over the target {self.rto_target_seconds:g}s"
        return f"drill of {self.target} passed in {self.timings.get('total', 0):.1f}s"


def _drill_connection(target: TargetConfig, config: DrillConfig) -> ConnectionInfo:
    if config.dsn is None:
        return connection_info(target)
    drill_target = target.model_copy(update={"dsn": config.dsn, "password_file": config.password_file, "password": None})
    return connection_info(drill_target)


@contextlib.asynccontextmanager
async def drill_server(
    target: TargetConfig,
    config: DrillConfig,
    manifest: LogicalManifest,
    server: ConnectionInfo | None = None,
    pg_bin_dirs: Sequence[Path] = (),
) -> AsyncIterator[ConnectionInfo]:
    """Where the drill restores: ``server`` (``drill --dsn``), the target's (or drill.dsn's) server, or a
    throw-away local cluster."""
    if server is not None:
        yield server
        return
    if config.mode == "server":
        yield _drill_connection(target, config)
        return
    major = server_major_of(manifest.server_version)
    async with throwaway_server(major, prefix="dbg-drill-", pg_bin_dirs=pg_bin_dirs) as server:
        yield server


async def _verify(info: ConnectionInfo, manifest: LogicalManifest, config: DrillConfig) -> list[CheckResult]:
    async with connected(info) as connection:
        results = (await verify_counts(connection, manifest)).checks
        results += await user_checks(connection, config)
        if config.amcheck:
            results.append(await amcheck(connection))
    return results


async def run_drill(
    policy: Policy,
    target_name: str,
    backup_id: str | None = None,
    *,
    rng: random.Random | None = None,
    server: ConnectionInfo | None = None,
) -> DrillReport:
    """Drill ``target_name`` (its ``drill:`` settings); ``server``: restore on that server instead (logical drills)."""
    target = policy.target(target_name)
    config = target.drill
    if server is not None and target.drill_kind == "pitr":
        raise UsageError("--dsn applies to logical drills; a point-in-time drill restores into a throw-away local cluster")
    mode = config.mode if server is None else "server"
    report = DrillReport(target_name, None, None, mode, None, datetime.now(UTC).isoformat())
    report.rto_target_seconds = config.rto_target.total_seconds() if config.rto_target else None
    started = time.monotonic()
    report.kind = target.drill_kind
    if report.kind == "pitr":
        report.mode = "local_cluster"
    try:
        if report.kind == "pitr":
            report.checks, report.recovery = await run_pitr_drill(policy, target_name, config, backup_id, report.timings)
            report.backup_id = str(report.recovery.get("backup_id"))
            rpo = report.recovery.get("rpo_seconds")
            report.rpo_seconds = float(rpo) if isinstance(rpo, int | float) else None
        else:
            await _drill(policy, target_name, target, config, backup_id, rng or random.Random(), report, server)
    except DbguardianError as error:
        report.error = str(error)
    except asyncio.CancelledError:
        report.error = "cancelled"
        _finish(policy, report, started)
        raise
    _finish(policy, report, started)
    log.info("drill finished", target=target_name, ok=report.ok, summary=report.summary(), timings=report.timings)
    return report


async def _drill(
    policy: Policy,
    target_name: str,
    target: TargetConfig,
    config: DrillConfig,
    backup_id: str | None,
    rng: random.Random,
    report: DrillReport,
    server_override: ConnectionInfo | None = None,
) -> None:
    storages = target_storages(policy, target_name)
    catalog = Catalog(storages)
    records = regular(await catalog.logical_backups(target_name))
    if backup_id is not None:
        record = await catalog.logical(target_name, backup_id)  # a refused manifest says why
    elif config.pick == "newest" or not records:
        record = latest(records, target_name)
    else:
        record = pick_backup(records, config.pick, config.recent, rng)
    storage = next(s for s in storages if s.name in record.storages)
    manifest = record.manifest
    report.backup_id, report.storage = record.id, storage.name
    identity = config.identity_file if manifest.encryption is not None else None
    async with (
        drill_server(target, config, manifest, server_override, policy.pg_bin_dirs) as server,
        admin_session(server) as admin,
        scratch_database(admin, server, scratch_name(target_name, secrets.token_hex(4)), manifest) as scratch,
    ):
        pg_restore = await pg_restore_for(manifest, policy.pg_bin_dirs, await major_of(admin))
        report.database = scratch.name
        phase = time.monotonic()
        # Spooled, so that fetching and restoring are timed apart (and --jobs can apply).
        async with archive(Located(record, storage), identity=identity, spool_dir=policy.state_dir / "tmp") as spool:
            report.timings["fetch"] = round(time.monotonic() - phase, 3)
            phase = time.monotonic()
            await run_pg_restore(
                pg_restore.path,
                scratch.info,
                spool,
                jobs=config.jobs,
                no_owner=True,
                no_privileges=True,
                psql=pg_restore.psql,
            )
            report.timings["restore"] = round(time.monotonic() - phase, 3)
        phase = time.monotonic()
        report.checks = await _verify(scratch.info, manifest, config)
        report.timings["verify"] = round(time.monotonic() - phase, 3)


def _finish(policy: Policy, report: DrillReport, started: float) -> None:
    # The recovery time is what a real restore would take: fetch + restore + verify, not the set-up.
    report.timings["total"] = round(sum(report.timings.get(p, 0.0) for p in ("fetch", "restore", "verify")), 3)
    report.timings["elapsed"] = round(time.monotonic() - started, 3)
    if report.rto_target_seconds is not None and report.error is None:
        report.rto_ok = report.timings["total"] <= report.rto_target_seconds
    report.ok = report.error is None and bool(report.checks) and all(c.ok for c in report.checks)
    report.ok = report.ok and report.rto_ok is not False
    record_history(policy, report)


def history_path(policy: Policy) -> Path:
    return policy.state_dir / "drills" / "history.jsonl"


def record_history(policy: Policy, report: DrillReport) -> None:
    """Append the report to the history; a failure to write it is logged and counted, not raised."""
    path = history_path(policy)
    try:
        append_line(path, json.dumps(report.to_json()))  # 0600 in a 0700 directory, whatever the umask
    except OSError as error:
        cleanup_failed("drill_history", error, path=str(path), target=report.target)


def read_history(policy: Policy, target: str | None = None) -> list[dict[str, Any]]:
    path = history_path(policy)
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            entry = json.loads(line)
            if target is None or entry.get("target") == target:
                entries.append(entry)
    return entries


def specs(policy: Policy) -> list[JobSpec]:
    return [
        JobSpec("drill", name, "-", target.drill.effective_cron, target.drill.every, policy.timezone)
        for name, target in policy.targets.items()
        if target.drill.enabled
    ]


async def run(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """A scheduled restore drill: its checks become one verdict, its phases the recovery-time gauges."""
    report = await run_drill(ctx.policy, spec.target)
    outcome = JobOutcome(result="success" if report.ok else "failure")
    outcome.observe("drill_last_result", spec.target, value=1 if report.ok else 0)
    if report.ok:
        outcome.observe("drill_last_success", spec.target, value=ctx.clock().timestamp())
    for phase, seconds in report.timings.items():
        outcome.observe("drill_duration", spec.target, phase, value=seconds)
    if report.rpo_seconds is not None:
        outcome.observe("drill_rpo", spec.target, value=report.rpo_seconds)
    expected = "the latest restore drill passes every check"
    if report.rto_target_seconds is not None:
        expected += f" within {report.rto_target_seconds:g}s"
    outcome.verdicts.append(Verdict(spec.target, "drill", report.ok, report.summary(), expected))
    return outcome


KIND = JobKind("drill", "scheduled", specs, run, exclusive=True)
