"""The WAL shipper job: a continuous job per target with ``wal:``, moving the spool onto every storage.

It loops until the daemon stops it: one pass of :func:`dbguardian.archiving.ship.ship_spool`, its
metrics published at once, then another pass at once if files were shipped (more may have arrived),
else after a short poll (``POLL`` seconds; a spool fills at most one segment per ``archive_timeout`` on
an idle server, and every few milliseconds under load, so polling costs nothing that matters).

A storage that fails is left alone for an exponentially growing wait (``BACKOFF_START`` doubling up to
``BACKOFF_MAX``) while the others go on: files wait in the spool for it, never dropped. After
``FAIL_AFTER`` failed attempts in a row the ``wal_ship`` check fails (alert through ``ctx.report``); it
resolves with the storage's next success. A file whose key holds a different object (a conflict) fails
the check at once, stays in the spool and is looked at again every ``CONFLICT_RECHECK`` seconds.

The decisions (waits, the verdict, when to hand it to the alerter) are pure functions of their inputs
and ``now``, tested without a daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dbguardian.archiving.ship import ShipReport, ship_spool
from dbguardian.errors import OperationError
from dbguardian.health import Verdict
from dbguardian.jobs.outcome import JobContext, JobKind, JobOutcome
from dbguardian.logs import get_logger
from dbguardian.policy import Policy
from dbguardian.schedule import JobSpec
from dbguardian.units import format_duration

log = get_logger("dbguardian.wal_ship")

CHECK = "wal_ship"
POLL = 1.0
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
FAIL_AFTER = 3
"""Failed attempts in a row before a storage fails the check (one dropped connection is not an alert)."""
REPORT_EVERY = timedelta(seconds=60)
"""A failing verdict is handed to the alerter at most this often (the alerter decides about reminders)."""
CONFLICT_RECHECK = 60.0
SPOOL = "(spool)"
"""The streak of passes that failed as a whole (the spool unreadable, encryption failing)."""


@dataclass
class Streak:
    """Consecutive failed attempts of one storage (or of whole passes)."""

    failures: int = 0
    since: datetime | None = None
    error: str = ""
    retry_at: float = 0.0
    """Loop time before which the storage is not tried again."""


def backoff(failures: int) -> float:
    """Seconds to wait before the next attempt after ``failures`` failures in a row."""
    return 0.0 if failures <= 0 else min(BACKOFF_MAX, BACKOFF_START * 2.0 ** (failures - 1))


def record(streak: Streak, error: str | None, now: datetime, loop_time: float) -> Streak:
    """The streak after one attempt: reset by a success, grown (with its next retry time) by a failure."""
    if error is None:
        return Streak()
    failures = streak.failures + 1
    return Streak(failures, streak.since or now, error, loop_time + backoff(failures))


def ship_verdict(
    target: str, streaks: Mapping[str, Streak], conflicts: Mapping[str, str], now: datetime, fail_after: int = FAIL_AFTER
) -> Verdict:
    """``wal_ship`` of one target: failing while a storage has failed ``fail_after`` attempts in a row or
    a spool file conflicts with a stored object."""
    problems = []
    for name, streak in sorted(streaks.items()):
        if streak.failures >= fail_after and streak.since is not None:
            age = format_duration(timedelta(seconds=int((now - streak.since).total_seconds())))
            where = "WAL shipping as a whole" if name == SPOOL else f"shipping to {name}"
            problems.append(f"{where} failing for {age} ({streak.failures} attempts): {streak.error}")
    for name, reason in sorted(conflicts.items()):
        problems.append(f"{name} conflicts with the stored object {reason}; kept in the spool")
    return Verdict(
        target,
        CHECK,
        not problems,
        "; ".join(problems) if problems else "every storage takes WAL",
        f"every WAL file shipped to every storage (alert after {fail_after} failed attempts in a row or a conflict)",
    )


def should_report(verdict: Verdict, last: tuple[bool, datetime] | None, now: datetime) -> bool:
    """Hand the verdict to the alerter? The first one (clears a state left firing by an earlier run), every
    change, and a failing one at most every ``REPORT_EVERY``."""
    if last is None or last[0] != verdict.ok:
        return True
    return not verdict.ok and now - last[1] >= REPORT_EVERY


def next_wait(report: ShipReport | None, streaks: Mapping[str, Streak], loop_time: float) -> float:
    """Seconds until the next pass: none after a pass that wrote something (more may be waiting), else a
    poll, shortened to the first storage's retry time."""
    if report is not None and (report.shipped or report.written) and not report.failures:
        return 0.0
    retries = [streak.retry_at - loop_time for streak in streaks.values() if streak.failures]
    return max(0.0, min([POLL, *retries]))


@dataclass
class _State:
    streaks: dict[str, Streak] = field(default_factory=dict)
    present: set[tuple[str, str]] = field(default_factory=set)
    conflicts: dict[str, str] = field(default_factory=dict)
    conflict_checked: dict[str, float] = field(default_factory=dict)
    last_reported: tuple[bool, datetime] | None = None


def publish(ctx: JobContext, target: str, report: ShipReport) -> None:
    """The pass's metrics, applied now (the job never returns an outcome while it runs)."""
    for storage, count in report.written.items():
        ctx.observe_now("wal_segments_shipped", target, storage, value=count, op="inc")
    for storage, moment in report.last_written.items():
        ctx.observe_now("wal_last_archived", target, storage, value=moment)
    for storage, count in report.failure_counts.items():
        ctx.observe_now("wal_ship_failures", target, storage, value=count, op="inc")
    for seconds in report.durations:
        ctx.observe_now("wal_ship_duration", target, value=seconds, op="observe")
    ctx.observe_now("wal_spool_segments", target, value=report.spool_files)
    ctx.observe_now("wal_spool_bytes", target, value=report.spool_bytes)


async def _pass(ctx: JobContext, spec: JobSpec, state: _State, loop_time: float) -> ShipReport | None:
    target = ctx.policy.target(spec.target)
    names = list(target.storage)
    ready = [name for name in names if state.streaks.get(name, Streak()).retry_at <= loop_time]
    spool_streak = state.streaks.get(SPOOL, Streak())
    if not ready or spool_streak.retry_at > loop_time:
        return None
    skip = [name for name, when in state.conflict_checked.items() if loop_time - when < CONFLICT_RECHECK]
    now = ctx.clock()
    try:
        report = await ship_spool(
            ctx.policy, spec.target, stop=ctx.stopping, storages=ready, present=state.present, skip=skip
        )
    except OperationError as error:
        state.streaks[SPOOL] = record(spool_streak, str(error), now, loop_time)
        log.error("WAL shipping pass failed", target=spec.target, error=str(error), attempt=state.streaks[SPOOL].failures)
        return None
    state.streaks.pop(SPOOL, None)
    publish(ctx, spec.target, report)
    for name in ready:
        streak = record(state.streaks.get(name, Streak()), report.failures.get(name), now, loop_time)
        if streak.failures:
            state.streaks[name] = streak
        elif state.streaks.pop(name, None) is not None:
            log.info("WAL shipping to the storage works again", target=spec.target, storage=name)
    for name in [name for name in state.conflicts if name not in skip]:  # looked at again in this pass
        if name not in report.conflicts:
            del state.conflicts[name]
            state.conflict_checked.pop(name, None)
    for name, reason in report.conflicts.items():
        state.conflicts[name] = reason
        state.conflict_checked[name] = loop_time
    if report.shipped:
        log.info("WAL shipped", target=spec.target, files=len(report.shipped), last=report.shipped[-1],
                 spool_files=report.spool_files)  # fmt: skip
    return report


async def run(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """Ship until the daemon stops the job (or a reload removes it)."""
    loop = asyncio.get_running_loop()
    state = _State()
    while not ctx.stopping.is_set():
        report = await _pass(ctx, spec, state, loop.time())
        now = ctx.clock()
        verdict = ship_verdict(spec.target, state.streaks, state.conflicts, now)
        if should_report(verdict, state.last_reported, now):
            state.last_reported = (verdict.ok, now)
            await ctx.report([verdict])
        wait = next_wait(report, state.streaks, loop.time())
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), timeout=wait)
    return JobOutcome()


def specs(policy: Policy) -> list[JobSpec]:
    """One shipper per target with ``wal:``."""
    return [
        JobSpec("wal_ship", name, "-", None, None, policy.timezone) for name, target in policy.targets.items() if target.wal
    ]


KIND = JobKind(name="wal_ship", mode="continuous", specs=specs, run=run)
