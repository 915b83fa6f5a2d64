"""Job kinds (adapters from job modules to JobOutcome); distributed into each job module at the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime

from dbguardian.alerts.pings import ping
from dbguardian.catalog import SAFETY_TIER, BackupRecord, list_backups
from dbguardian.errors import DbguardianError
from dbguardian.health import Verdict
from dbguardian.jobs.backup import PartialBackup, run_backup
from dbguardian.jobs.drill import run_drill
from dbguardian.jobs.health import check_target
from dbguardian.jobs.outcome import CatchUpPlan, JobCancelled, JobContext, JobKind, JobOutcome, no_specs
from dbguardian.jobs.prune import prune_target
from dbguardian.jobs.verify import verify
from dbguardian.logs import get_logger
from dbguardian.policy import PingsConfig, Policy
from dbguardian.schedule import JobSpec, catch_up_plan
from dbguardian.storage import open_storage

log = get_logger("dbguardian.jobs")


# ------------------------------------------------------------------------------------------ backup
def backup_specs(policy: Policy) -> list[JobSpec]:
    return [
        JobSpec("backup", target_name, tier, schedule.cron, schedule.every, policy.timezone)
        for target_name, target in policy.targets.items()
        for tier, schedule in target.schedules.items()
    ]


async def _ping(outcome: JobOutcome, pings: PingsConfig, event: str, target: str) -> None:
    if getattr(pings, event) is None and getattr(pings, f"{event}_file") is None:
        return
    ok = await ping(pings, event, target)
    outcome.observe("pings", target, event, "success" if ok else "failure", op="inc")


def _record_success(outcome: JobOutcome, spec: JobSpec, started_at: float, stored: int, raw: int) -> None:
    labels = (spec.target, spec.tier)
    outcome.observe("last_success", *labels, value=started_at)
    outcome.observe("last_stored_bytes", *labels, value=stored)
    outcome.observe("last_raw_bytes", *labels, value=raw)


async def run_backup_job(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """One scheduled backup: pings around it, metrics, then prune (on success) and a health check."""
    outcome = JobOutcome(result="failure", follow_ups=["health"])
    labels = (spec.target, spec.tier)
    outcome.observe("last_attempt", *labels, value=ctx.clock().timestamp())
    pings = ctx.policy.targets[spec.target].pings
    await _ping(outcome, pings, "start", spec.target)
    started = time.monotonic()
    try:
        manifest = await run_backup(ctx.policy, spec.target, spec.tier, clock=ctx.clock)
    except asyncio.CancelledError:
        log.warning("backup cancelled", job=spec.id)
        outcome.result = "cancelled"
        outcome.follow_ups.clear()
        outcome.observe("duration", *labels, value=time.monotonic() - started, op="observe")
        outcome.observe("runs", *labels, "cancelled", op="inc")
        raise JobCancelled(outcome) from None
    except PartialBackup as partial:
        outcome.result = "partial"
        log.error("backup failed on some storages", job=spec.id, reason=ctx.reason, error=str(partial))
        manifest = partial.manifest
        _record_success(outcome, spec, manifest.started_at.timestamp(), manifest.size_bytes, manifest.raw_size_bytes)
        for storage_name in partial.failures:
            outcome.observe("storage_failures", spec.target, storage_name, op="inc")
    except DbguardianError as error:
        log.error("backup failed", job=spec.id, reason=ctx.reason, error=str(error))
    except Exception as error:  # a bug must not take the daemon down with it; the run still counts
        log.exception("backup crashed", job=spec.id, error=repr(error))
    else:
        outcome.result = "success"
        _record_success(outcome, spec, manifest.started_at.timestamp(), manifest.size_bytes, manifest.raw_size_bytes)
        outcome.follow_ups.insert(0, "prune")
    outcome.observe("duration", *labels, value=time.monotonic() - started, op="observe")
    outcome.observe("runs", *labels, outcome.result, op="inc")
    await _ping(outcome, pings, "success" if outcome.result == "success" else "fail", spec.target)
    return outcome


def newest_by_tier(records: list[BackupRecord]) -> dict[tuple[str, str], datetime]:
    newest: dict[tuple[str, str], datetime] = {}
    for record in records:
        key = (record.manifest.target, record.manifest.tier)
        if key not in newest or record.manifest.started_at > newest[key]:
            newest[key] = record.manifest.started_at
    return newest


async def read_catalog(policy: Policy) -> list[BackupRecord]:
    storages = [open_storage(name, config) for name, config in policy.storage.items()]
    return [record for record in await list_backups(storages) if record.manifest.target in policy.targets]


async def backup_catch_up(ctx: JobContext, specs: Sequence[JobSpec]) -> CatchUpPlan:
    """The newest backup of every tier (exported at once) and the tiers whose scheduled run was missed."""
    outcome = JobOutcome()
    try:
        records = await read_catalog(ctx.policy)
    except DbguardianError as error:
        log.error("catalog unreadable at start; no catch-up", error=str(error))
        return CatchUpPlan(outcome, [])
    newest = newest_by_tier(records)
    for (target, tier), moment in newest.items():
        if tier != SAFETY_TIER:
            outcome.observe("last_success", target, tier, value=moment.timestamp())
    return CatchUpPlan(outcome, catch_up_plan(specs, newest, ctx.clock()))


# ------------------------------------------------------------------------------------------ prune
async def run_prune_job(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """Retention for one target (after every successful backup, still under the target's lock)."""
    outcome = JobOutcome()
    try:
        pruned = await prune_target(ctx.policy, spec.target, now=ctx.clock())
    except Exception as error:  # pruning problems are reported, never fatal
        log.exception("prune crashed", target=spec.target, error=repr(error))
        outcome.result = "failure"
        outcome.observe("prune_runs", spec.target, "failure", op="inc")
        return outcome
    for storage_name, _ in pruned.deleted:
        outcome.observe("pruned_backups", spec.target, storage_name, op="inc")
    outcome.result = "failure" if pruned.errors else "success"
    outcome.observe("prune_runs", spec.target, outcome.result, op="inc")
    return outcome


# ------------------------------------------------------------------------------------------ health
def health_specs(policy: Policy) -> list[JobSpec]:
    specs = []
    for target_name in policy.targets:
        rules = policy.health_rules(target_name)
        specs.append(JobSpec("health", target_name, "-", rules.cron, rules.every, policy.timezone))
    return specs


async def run_health_job(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """The health checks of one target: verdicts for the alert state machines, gauges for Prometheus."""
    now = ctx.clock()
    outcome = JobOutcome()
    verdicts, facts = await check_target(ctx.policy, spec.target, now, ctx.specs, running=ctx.target_busy(spec.target))
    outcome.verdicts = verdicts
    for verdict in verdicts:
        outcome.observe("health_ok", spec.target, verdict.check, value=1 if verdict.ok else 0)
        if not verdict.ok:
            log.warning("health check failing", target=spec.target, check=verdict.check, observed=verdict.observed)
    newest: dict[tuple[str, str], float] = {}
    for backup in facts.backups:
        for storage in backup.storages:
            key = (backup.tier, storage)
            newest[key] = max(newest.get(key, backup.started_at.timestamp()), backup.started_at.timestamp())
    for (tier, storage), moment in newest.items():
        outcome.observe("backup_age", spec.target, tier, storage, value=now.timestamp() - moment)
    outcome.observe("health_last_run", value=now.timestamp())
    return outcome


# ------------------------------------------------------------------------------------------ drill
def drill_specs(policy: Policy) -> list[JobSpec]:
    return [
        JobSpec("drill", name, "-", target.drill.effective_cron, target.drill.every, policy.timezone)
        for name, target in policy.targets.items()
        if target.drill.enabled
    ]


async def run_drill_job(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    report = await run_drill(ctx.policy, spec.target)
    outcome = JobOutcome(result="success" if report.ok else "failure")
    outcome.observe("drill_last_result", spec.target, value=1 if report.ok else 0)
    if report.ok:
        outcome.observe("drill_last_success", spec.target, value=ctx.clock().timestamp())
    for phase, seconds in report.timings.items():
        outcome.observe("drill_duration", spec.target, phase, value=seconds)
    expected = "the latest restore drill passes every check"
    if report.rto_target_seconds is not None:
        expected += f" within {report.rto_target_seconds:g}s"
    outcome.verdicts.append(Verdict(spec.target, "drill", report.ok, report.summary(), expected))
    return outcome


# ------------------------------------------------------------------------------------------ verify
def verify_specs(policy: Policy) -> list[JobSpec]:
    return [
        JobSpec("verify", name, "-", target.verify.cron, target.verify.every, policy.timezone)
        for name, target in policy.targets.items()
        if target.verify is not None
    ]


async def run_verify_job(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    config = ctx.policy.targets[spec.target].verify
    expected = "stored objects match their manifests"
    outcome = JobOutcome()
    try:
        results = await verify(ctx.policy, spec.target, every=bool(config and config.all))
    except DbguardianError as error:
        outcome.result = "failure"
        outcome.observe("verify_last_result", spec.target, value=0)
        outcome.verdicts.append(Verdict(spec.target, "verify", False, str(error), expected))
        return outcome
    failed = [f"{r.storage}:{r.key}: {r.error}" for r in results if not r.ok]
    outcome.result = "failure" if failed else "success"
    outcome.observe("verify_last_result", spec.target, value=0 if failed else 1)
    observed = "; ".join(failed) or f"{len(results)} object(s) match their manifests"
    outcome.verdicts.append(Verdict(spec.target, "verify", not failed, observed, expected))
    return outcome


BACKUP = JobKind("backup", "scheduled", backup_specs, run_backup_job, exclusive=True, catch_up=backup_catch_up)
PRUNE = JobKind("prune", "follow_up", no_specs, run_prune_job, exclusive=True)
HEALTH = JobKind("health", "scheduled", health_specs, run_health_job, coalesce=True)
DRILL = JobKind("drill", "scheduled", drill_specs, run_drill_job, exclusive=True)
VERIFY = JobKind("verify", "scheduled", verify_specs, run_verify_job, exclusive=True)
