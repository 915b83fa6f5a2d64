"""The backup job kind: one per target and schedule tier.

Dead-man pings around the run, the run's metrics, then ``prune`` (after a success, under the target's
lock) and ``health`` (always: a failure alerts at once) as follow-ups. At the daemon's start it reads
the catalog: the newest backup of each tier is exported, and tiers whose scheduled run was missed while
the daemon was down are caught up. The backup itself is :mod:`dbguardian.backup.logical`, or
:mod:`dbguardian.backup.physical` for a tier of ``kind: physical`` (given a shipper pass, so its WAL
reaches the storages even while the WAL shipper job backs off); metrics and follow-ups are the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from dbguardian.alerts.pings import ping
from dbguardian.backup.logical import PartialBackup, run_backup
from dbguardian.catalog import SAFETY_TIER, Catalog
from dbguardian.catalog.manifest import AnyManifest
from dbguardian.errors import DbguardianError
from dbguardian.jobs.outcome import CatchUpPlan, JobCancelled, JobContext, JobKind, JobOutcome
from dbguardian.logs import get_logger
from dbguardian.policy import PingsConfig, Policy
from dbguardian.schedule import JobSpec, catch_up_plan
from dbguardian.storage import open_storage

log = get_logger("dbguardian.jobs.backup")

Clock = Callable[[], datetime]


async def take_backup(policy: Policy, target: str, tier: str, clock: Clock) -> AnyManifest:
    """The backup routine of the tier's kind."""
    if policy.target(target).tier_kind(tier) == "physical":
        # Imported by the kind that uses them: cron's one-shot logical backup pays no start-up for them.
        from dbguardian.archiving.ship import ship_spool
        from dbguardian.backup.physical import run_physical_backup

        return await run_physical_backup(policy, target, tier, clock=clock, ship=ship_spool)
    return await run_backup(policy, target, tier, clock=clock)


def specs(policy: Policy) -> list[JobSpec]:
    return [
        JobSpec("backup", target_name, tier, schedule.cron, schedule.every, policy.timezone)
        for target_name, target in policy.targets.items()
        for tier, schedule in target.schedules.items()
    ]


async def send_ping(ctx: JobContext, pings: PingsConfig, event: str, target: str) -> None:
    if not pings.secret(event).configured:
        return
    ok = await ping(pings, event, target)
    ctx.observe_now("pings", target, event, "success" if ok else "failure", op="inc")


async def run(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """One scheduled backup (or a catch-up): the backup routine, with everything around it reported."""
    outcome = JobOutcome(result="failure", follow_ups=["health"])
    labels = (spec.target, spec.tier)
    ctx.observe_now("last_attempt", *labels, value=ctx.clock().timestamp())  # while it runs, not after
    pings = ctx.policy.targets[spec.target].pings
    await send_ping(ctx, pings, "start", spec.target)
    started = time.monotonic()
    manifest: AnyManifest | None
    try:
        manifest = await take_backup(ctx.policy, spec.target, spec.tier, ctx.clock)
    except asyncio.CancelledError:
        log.warning("backup cancelled", job=spec.id)
        outcome.result = "cancelled"
        outcome.follow_ups.clear()
        outcome.observe("duration", *labels, value=time.monotonic() - started, op="observe")
        outcome.observe("runs", *labels, "cancelled", op="inc")
        raise JobCancelled(outcome) from None
    except PartialBackup as partial:  # either kind
        outcome.result = "partial"
        log.error("backup failed on some storages", job=spec.id, reason=ctx.reason, error=str(partial))
        manifest = partial.manifest
        for storage_name in partial.failures:
            outcome.observe("storage_failures", spec.target, storage_name, op="inc")
    except DbguardianError as error:
        log.error("backup failed", job=spec.id, reason=ctx.reason, error=str(error))
        manifest = None
    except Exception as error:  # a bug must not take the daemon down with it; the run still counts
        log.exception("backup crashed", job=spec.id, error=repr(error))
        manifest = None
    else:
        outcome.result = "success"
        outcome.follow_ups.insert(0, "prune")
    if manifest is not None:  # valid on at least one storage
        outcome.observe("last_success", *labels, value=manifest.started_at.timestamp())
        outcome.observe("last_stored_bytes", *labels, value=manifest.size_bytes)
        outcome.observe("last_raw_bytes", *labels, value=manifest.raw_size_bytes)
    outcome.observe("duration", *labels, value=time.monotonic() - started, op="observe")
    outcome.observe("runs", *labels, outcome.result, op="inc")
    await send_ping(ctx, pings, "success" if outcome.result == "success" else "fail", spec.target)
    return outcome


async def newest_backups(policy: Policy) -> dict[tuple[str, str], datetime]:
    """(target, tier) → start of its newest valid backup, over every storage of the policy."""
    storages = [open_storage(name, config) for name, config in policy.storage.items()]
    newest = await Catalog(storages).newest_by_tier()
    return {(target, tier): moment for (target, tier), moment in newest.items() if target in policy.targets}


async def catch_up(ctx: JobContext, backup_specs: Sequence[JobSpec]) -> CatchUpPlan:
    """The newest backup of every tier (exported at once) and the tiers whose scheduled run was missed."""
    outcome = JobOutcome()
    try:
        newest = await newest_backups(ctx.policy)
    except DbguardianError as error:
        log.error("catalog unreadable at start; no catch-up", error=str(error))
        return CatchUpPlan(outcome, [])
    for (target, tier), moment in newest.items():
        if tier != SAFETY_TIER:
            outcome.observe("last_success", target, tier, value=moment.timestamp())
    return CatchUpPlan(outcome, catch_up_plan(backup_specs, newest, ctx.clock()))


KIND = JobKind("backup", "scheduled", specs, run, exclusive=True, catch_up=catch_up)
