"""Job specs as pure data: a spec's trigger and next runs, and catch-up decisions.

Nothing here sleeps or reads a clock: ``now`` is always passed in, so every function is
table-tested. Each job kind derives its specs from the policy (``jobs/registry.job_specs``); the
daemon's ``jobtable`` turns scheduled ones into APScheduler jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from dbguardian.cron import Cron, next_fire, parse_cron

_TINY = timedelta(microseconds=1)


class CronScheduleTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger over :mod:`dbguardian.cron` (its DST rules, not APScheduler's)."""

    def __init__(self, cron: Cron, zone: ZoneInfo) -> None:
        self.cron = cron
        self.zone = zone

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        start = now if previous_fire_time is None else previous_fire_time.astimezone(UTC) + _TINY
        return next_fire(self.cron, start, self.zone).astimezone(UTC)

    def __str__(self) -> str:
        return f"cron[{self.cron.expression}, {self.zone.key}]"


@dataclass(frozen=True)
class JobSpec:
    """One row of the job table."""

    kind: str
    """The registered kind (``dbguardian.jobs.registry``): backup, health, drill, verify, ..."""
    target: str
    tier: str
    cron: str | None
    every: timedelta | None
    timezone: str

    @property
    def id(self) -> str:
        # Per-target kinds use tier "-" (tier names must start with a letter or digit).
        return f"{self.kind}:{self.target}" if self.tier == "-" else f"{self.kind}:{self.target}:{self.tier}"

    def describe_trigger(self) -> str:
        if self.cron is None and self.every is None:
            return "continuous"
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.timezone})"
        assert self.every is not None
        return f"every {self.every.total_seconds():g}s"

    def trigger(self, start: datetime | None = None) -> BaseTrigger:
        """The APScheduler trigger. Intervals are anchored at ``start`` (the daemon's start)."""
        if self.cron is not None:
            return CronScheduleTrigger(parse_cron(self.cron), ZoneInfo(self.timezone))
        assert self.every is not None
        return IntervalTrigger(seconds=self.every.total_seconds(), start_date=start, timezone=UTC)

    def next_after(self, moment: datetime, anchor: datetime) -> datetime:
        """The first fire time strictly after ``moment`` (UTC); intervals count from ``anchor``."""
        if self.cron is not None:
            return next_fire(parse_cron(self.cron), moment.astimezone(UTC) + _TINY, ZoneInfo(self.timezone)).astimezone(UTC)
        assert self.every is not None
        elapsed = max(moment - anchor, timedelta(0))
        periods = int(elapsed / self.every) + 1
        return anchor + periods * self.every


def next_runs(spec: JobSpec, after: datetime, count: int = 3, anchor: datetime | None = None) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after``, in UTC (intervals count from ``anchor``)."""
    runs: list[datetime] = []
    moment = after
    for _ in range(count):
        moment = spec.next_after(moment, anchor or after)
        runs.append(moment)
    return runs


@dataclass(frozen=True)
class CatchUp:
    spec: JobSpec
    reason: str
    missed_fire_time: datetime | None


def catch_up_plan(
    specs: Iterable[JobSpec], newest_backup: Mapping[tuple[str, str], datetime | None], now: datetime
) -> list[CatchUp]:
    """Backup jobs to run at start because a fire time passed since the newest valid backup of their tier.

    ``newest_backup`` maps (target, tier) to the start of its newest valid backup (None: never).
    A tier that was never backed up is caught up too: a target with no backup is the riskiest state.
    """
    plan: list[CatchUp] = []
    for spec in specs:
        if spec.kind != "backup":
            continue
        newest = newest_backup.get((spec.target, spec.tier))
        if newest is None:
            plan.append(CatchUp(spec, "no valid backup of this tier yet", None))
            continue
        if spec.cron is not None:
            fire = spec.next_after(newest, newest)
            if fire <= now:
                local = fire.astimezone(ZoneInfo(spec.timezone))
                plan.append(CatchUp(spec, f"missed the run due at {local.isoformat()}", fire))
        else:
            assert spec.every is not None
            due = newest + spec.every
            if due <= now:
                plan.append(CatchUp(spec, f"newest backup is older than every {spec.every.total_seconds():g}s", due))
    return plan
