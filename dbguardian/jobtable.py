"""The daemon's job table on APScheduler: scheduled jobs fire into the runner; its rows feed
``/metrics`` (next runs) and sd_notify's STATUS.

``install`` makes the scheduler's table equal a new list of specs synchronously (no await between
removing and adding), so a reload swaps the whole table in one step.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from dbguardian.logs import get_logger
from dbguardian.metrics import Metrics
from dbguardian.policy import Policy
from dbguardian.runner import Runner
from dbguardian.schedule import JobSpec

log = get_logger("dbguardian.daemon")

Row = tuple[str, str, str, str, datetime | None]


class JobTable:
    def __init__(self, runner: Runner, metrics: Metrics, misfire_grace: timedelta) -> None:
        self.runner = runner
        self.metrics = metrics
        self.scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": max(1, int(misfire_grace.total_seconds())),
            },
        )
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)

    def install(self, policy: Policy, specs: list[JobSpec], now: datetime) -> None:
        """Make the table equal ``specs`` and hand policy and table to the runner, in one step."""
        wanted = {spec.id: spec for spec in specs}
        for job_id in self.runner.specs:
            if job_id not in wanted and self.scheduler.get_job(job_id) is not None:
                self.scheduler.remove_job(job_id)
        for job_id, spec in wanted.items():
            if self.runner.specs.get(job_id) != spec and self.runner.kinds[spec.kind].mode == "scheduled":
                self.scheduler.add_job(self._fire, trigger=spec.trigger(start=now), args=[job_id], id=job_id, name=job_id,
                                       replace_existing=True)  # fmt: skip
        self.runner.configure(policy, wanted)
        self.metrics.jobs.clear()
        for kind in {spec.kind for spec in specs}:
            self.metrics.jobs.labels(kind).set(sum(1 for spec in specs if spec.kind == kind))

    async def _fire(self, job_id: str) -> None:
        spec = self.runner.specs.get(job_id)
        if spec is not None:
            await self.runner.run(spec, "schedule")

    def _on_missed(self, event: JobExecutionEvent) -> None:
        spec = self.runner.specs.get(event.job_id)
        if spec is not None:
            log.warning("scheduled run missed (too late to start)", job=spec.id, due=str(event.scheduled_run_time))
            self.metrics.missed_runs.labels(spec.target, spec.tier).inc()

    def rows(self) -> list[Row]:
        specs = self.runner.specs
        jobs = [(specs[job.id], getattr(job, "next_run_time", None)) for job in self.scheduler.get_jobs() if job.id in specs]
        return [(spec.id, spec.kind, spec.target, spec.tier, moment) for spec, moment in jobs]

    def status(self) -> str:
        upcoming = [(moment, job) for job, _, _, _, moment in self.rows() if moment is not None]
        if not upcoming:
            return f"{len(self.runner.specs)} jobs, none scheduled"
        moment, job = min(upcoming)
        return f"{len(self.runner.specs)} jobs; next: {job} at {moment.astimezone(UTC).isoformat()}"
