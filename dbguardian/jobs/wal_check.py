"""The WAL checks between health runs: a scheduled job per target with ``wal:``, every ``rpo_target / 2``
(at least a minute, at most 15 minutes).

The health job runs every 6 hours by default; an archive that stops is a lost recovery point from the
first minute, so ``wal_stale``, ``wal_backlog``, ``archiver_failing``, ``wal_gap`` and ``base_stale`` are
judged this often too (same facts, same verdicts, same alert state: an incident is alerted once,
whichever job saw it first), and the RPO gauge stays current. A run costs one ``pg_stat_archiver``
query, one spool scan and one listing of the WAL and backup folders per storage.
"""

from __future__ import annotations

from datetime import timedelta

from dbguardian.archiving.status import wal_status
from dbguardian.jobs.health import observe_wal
from dbguardian.jobs.outcome import JobContext, JobKind, JobOutcome
from dbguardian.policy import Policy
from dbguardian.schedule import JobSpec

MIN_EVERY = timedelta(minutes=1)
MAX_EVERY = timedelta(minutes=15)


def interval(rpo_target: timedelta) -> timedelta:
    """Twice per ``rpo_target``, so a stale archive is seen well within it; bounded for cost and noise."""
    return min(max(rpo_target / 2, MIN_EVERY), MAX_EVERY)


def specs(policy: Policy) -> list[JobSpec]:
    return [
        JobSpec("wal_check", name, "-", None, interval(target.wal.rpo_target), policy.timezone)
        for name, target in policy.targets.items()
        if target.wal is not None
    ]


async def run(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    status = await wal_status(ctx.policy, spec.target, ctx.clock())
    outcome = JobOutcome(result="success" if all(v.ok for v in status.verdicts) else "failure", verdicts=status.verdicts)
    for verdict in status.verdicts:
        outcome.observe("health_ok", spec.target, verdict.check, value=1 if verdict.ok else 0)
    observe_wal(outcome, spec.target, status)
    return outcome


KIND = JobKind("wal_check", "scheduled", specs, run, coalesce=True)
