"""``dbguardian run``: the long-running service.

Lifecycle: start (state directory, HTTP listener, job table, READY=1, catch-up) → serve until
SIGTERM/SIGINT (stop starting jobs, wait ``shutdown_grace`` for running ones, cancel the rest,
exit 0; a second signal cancels at once). SIGHUP re-reads the policy: valid → the job table is
swapped in one step (running jobs finish); invalid → the old table stays, every problem is logged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from dbguardian.alerts.dispatch import Alerter
from dbguardian.alerts.pings import ping
from dbguardian.catalog import SAFETY_TIER, BackupRecord, Manifest, list_backups
from dbguardian.errors import DbguardianError, OperationError, PolicyError
from dbguardian.health import TargetFacts, Verdict
from dbguardian.http import HttpServer, Response
from dbguardian.jobs.backup import PartialBackup, run_backup
from dbguardian.jobs.drill import run_drill
from dbguardian.jobs.health import check_target
from dbguardian.jobs.prune import prune_target
from dbguardian.jobs.verify import verify
from dbguardian.logs import get_logger
from dbguardian.metrics import Metrics
from dbguardian.notify import Notifier, watchdog_interval
from dbguardian.policy import HEALTH_DEFAULTS, PingsConfig, Policy, load_policy
from dbguardian.schedule import JobSpec, catch_up_plan, job_specs
from dbguardian.storage import open_storage

log = get_logger("dbguardian.daemon")

HEARTBEAT_SECONDS = 1.0
HEARTBEAT_STALE_SECONDS = 15.0
OUTBOX_SECONDS = 5.0

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_state_dir(path: Path) -> None:
    """The state directory must exist (created if missing) and be writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise OperationError(f"state_dir {path} is not writable: {error.strerror or error}") from None


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


class Daemon:
    def __init__(
        self,
        policy_path: Path,
        policy: Policy,
        *,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.policy_path = policy_path
        self.policy = policy
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.specs: dict[str, JobSpec] = {}
        self.scheduler: AsyncIOScheduler | None = None
        self.http: HttpServer | None = None
        self.running: set[asyncio.Task[None]] = set()
        self.target_locks: dict[str, asyncio.Lock] = {}
        self.slots = asyncio.Semaphore(policy.max_concurrent_backups)
        self._slots_size = policy.max_concurrent_backups
        self.stopping = False
        self.health_locks: dict[str, asyncio.Lock] = {}
        self.alerter = self._make_alerter(policy)
        self.heartbeat = time.monotonic()
        self._stop = asyncio.Event()
        self._signals = 0
        self._started = utcnow()

    # ----------------------------------------------------------------------------- lifecycle
    async def run(self) -> int:
        check_state_dir(self.policy.state_dir)
        listen = self.policy.metrics
        self.http = HttpServer(
            listen.host, listen.port, {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz}
        )
        await self.http.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        background = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._flush_outbox())]
        try:
            self.scheduler = AsyncIOScheduler(
                timezone=UTC,
                job_defaults={
                    "coalesce": True,
                    "max_instances": 1,
                    "misfire_grace_time": max(1, int(self.policy.misfire_grace_time.total_seconds())),
                },
            )
            self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
            self._install(job_specs(self.policy))
            self.scheduler.start()
            log.info("daemon started", jobs=sorted(self.specs), metrics=f"http://{listen.host}:{self.http.port}/metrics")
            self.notifier.send("READY=1", f"STATUS={self.status()}", f"MAINPID={os.getpid()}")
            await self._start_catch_up()
            await self._stop.wait()
            await self._shutdown()
        finally:
            for task in background:
                task.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self.http.close()
            self.notifier.close()
        log.info("daemon stopped")
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    def _on_stop_signal(self, signum: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping: no new jobs; waiting for running ones", signal=signum.name,
                     grace_seconds=self.policy.shutdown_grace.total_seconds())  # fmt: skip
            self._stop.set()
        else:
            log.warning("second stop signal: cancelling running jobs now", signal=signum.name)
            self._cancel_running()

    async def _shutdown(self) -> None:
        self.stopping = True
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        pending = {task for task in self.running if not task.done()}
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=self.policy.shutdown_grace.total_seconds())
            if still_running:
                log.warning("grace period over: cancelling running jobs", jobs=len(still_running))
                self._cancel_running()
                await asyncio.wait(still_running, timeout=30)

    def _cancel_running(self) -> None:
        for task in self.running:
            task.cancel()

    async def _flush_outbox(self) -> None:
        """Retry undelivered alerts (a channel that was down) every few seconds."""
        while True:
            await asyncio.sleep(OUTBOX_SECONDS)
            try:
                await self.alerter.flush(self.clock())
            except Exception as error:  # never let delivery problems stop the loop
                log.exception("alert outbox flush failed", error=repr(error))

    def _make_alerter(self, policy: Policy) -> Alerter:
        return Alerter(policy, count=lambda channel, result: self.metrics.alert_deliveries.labels(channel, result).inc())

    async def _heartbeat(self) -> None:
        interval = watchdog_interval()
        next_watchdog = time.monotonic()
        while True:
            self.heartbeat = time.monotonic()
            if interval is not None and self.heartbeat >= next_watchdog:
                self.notifier.send("WATCHDOG=1")
                next_watchdog = self.heartbeat + interval
            await asyncio.sleep(min(HEARTBEAT_SECONDS, interval or HEARTBEAT_SECONDS))

    # ----------------------------------------------------------------------------- job table
    def _install(self, specs: list[JobSpec]) -> None:
        """Make the scheduler's table equal ``specs``, synchronously (no await: the swap is atomic)."""
        assert self.scheduler is not None
        wanted = {spec.id: spec for spec in specs}
        for job_id in list(self.specs):
            if job_id not in wanted:
                self.scheduler.remove_job(job_id)
        for job_id, spec in wanted.items():
            if self.specs.get(job_id) != spec:
                self.scheduler.add_job(
                    self._scheduled_run,
                    trigger=spec.trigger(start=self.clock()),
                    args=[job_id],
                    id=job_id,
                    name=job_id,
                    replace_existing=True,
                )
        self.specs = wanted
        for spec in specs:
            self.target_locks.setdefault(spec.target, asyncio.Lock())
        kinds: dict[str, int] = {}
        for spec in specs:
            kinds[spec.kind] = kinds.get(spec.kind, 0) + 1
        self.metrics.jobs.clear()
        for kind, count in kinds.items():
            self.metrics.jobs.labels(kind).set(count)

    def job_rows(self) -> list[tuple[str, str, str, str, datetime | None]]:
        if self.scheduler is None:
            return []
        rows: list[tuple[str, str, str, str, datetime | None]] = []
        for job in self.scheduler.get_jobs():
            spec = self.specs.get(job.id)
            if spec is not None:
                rows.append((spec.id, spec.kind, spec.target, spec.tier, getattr(job, "next_run_time", None)))
        return rows

    def status(self) -> str:
        upcoming = [(moment, job) for job, _, _, _, moment in self.job_rows() if moment is not None]
        if not upcoming:
            return f"{len(self.specs)} jobs, none scheduled"
        moment, job = min(upcoming)
        return f"{len(self.specs)} jobs; next: {job} at {moment.astimezone(UTC).isoformat()}"

    async def reload(self) -> bool:
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            policy = load_policy(self.policy_path)
        except PolicyError as error:
            for problem in error.problems:
                log.error("policy reload rejected; keeping the running policy", problem=problem)
            self.metrics.reloads.labels("failure").inc()
            self.metrics.last_reload_success.set(0)
            await self._policy_verdict(False, "; ".join(error.problems))
            self.notifier.send("READY=1", f"STATUS=reload rejected; {self.status()}")
            return False
        self.policy = policy
        if policy.max_concurrent_backups != self._slots_size:  # jobs already waiting keep the old limit
            self.slots = asyncio.Semaphore(policy.max_concurrent_backups)
            self._slots_size = policy.max_concurrent_backups
        self._install(job_specs(policy))
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_reload_success.set(1)
        self.alerter = self._make_alerter(policy)
        await self._policy_verdict(True, "the reloaded policy is valid")
        log.info("policy reloaded", jobs=sorted(self.specs))
        self.notifier.send("READY=1", f"STATUS={self.status()}")
        return True

    # ----------------------------------------------------------------------------- running jobs
    async def _scheduled_run(self, job_id: str) -> None:
        spec = self.specs.get(job_id)
        if spec is None:
            return
        if spec.kind == "health":
            await self.run_health(spec.target)
        elif spec.kind in ("drill", "verify"):
            await self.run_check_job(spec)
        else:
            await self.run_job(spec, reason="schedule")

    async def run_job(self, spec: JobSpec, reason: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        try:
            async with self.target_locks.setdefault(spec.target, asyncio.Lock()), self.slots:
                if self.stopping:
                    return
                await self._run_backup(spec, reason)
        finally:
            self.running.discard(task)
            self.notifier.send(f"STATUS={self.status()}")
        if not self.stopping:
            await self.run_health(spec.target)  # right after every backup: failures alert at once

    async def _run_backup(self, spec: JobSpec, reason: str) -> None:
        labels = (spec.target, spec.tier)
        self.metrics.last_attempt.labels(*labels).set(self.clock().timestamp())
        self.metrics.running.labels(spec.kind).inc()
        started = time.monotonic()
        result = "failure"
        pings = self.policy.targets[spec.target].pings
        await self._ping(pings, "start", spec.target)
        try:
            manifest = await run_backup(self.policy, spec.target, spec.tier, clock=self.clock)
        except asyncio.CancelledError:
            result = "cancelled"
            log.warning("backup cancelled", job=spec.id)
            raise
        except PartialBackup as partial:
            result = "partial"
            log.error("backup failed on some storages", job=spec.id, reason=reason, error=str(partial))
            manifest = partial.manifest
            self._record_success(labels, manifest)
            for storage_name in partial.failures:
                self.metrics.storage_failures.labels(spec.target, storage_name).inc()
        except DbguardianError as error:
            log.error("backup failed", job=spec.id, reason=reason, error=str(error))
        except Exception as error:  # a bug must not take the daemon down with it
            log.exception("backup crashed", job=spec.id, error=repr(error))
        else:
            result = "success"
            self._record_success(labels, manifest)
        finally:
            self.metrics.running.labels(spec.kind).dec()
            self.metrics.duration.labels(*labels).observe(time.monotonic() - started)
            self.metrics.runs.labels(*labels, result).inc()
        await self._ping(pings, "success" if result == "success" else "fail", spec.target)
        if result == "success":
            await self._prune(spec.target)

    async def run_check_job(self, spec: JobSpec) -> None:
        """A restore drill or a verify run: one per target at a time, never beside its backup."""
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        try:
            async with self.target_locks.setdefault(spec.target, asyncio.Lock()), self.slots:
                if self.stopping or spec.target not in self.policy.targets:
                    return
                self.metrics.running.labels(spec.kind).inc()
                try:
                    verdict = await (self._drill(spec.target) if spec.kind == "drill" else self._verify(spec.target))
                finally:
                    self.metrics.running.labels(spec.kind).dec()
        finally:
            self.running.discard(task)
        try:
            await self.alerter.process([verdict], self.clock(), self._renotify)
        except Exception as error:  # alerting problems must not break the job loop
            log.exception("alerting failed", error=repr(error))

    async def _drill(self, target: str) -> Verdict:
        report = await run_drill(self.policy, target)
        self.metrics.drill_last_result.labels(target).set(1 if report.ok else 0)
        if report.ok:
            self.metrics.drill_last_success.labels(target).set(self.clock().timestamp())
        for phase, seconds in report.timings.items():
            self.metrics.drill_duration.labels(target, phase).set(seconds)
        expected = "the latest restore drill passes every check"
        if report.rto_target_seconds is not None:
            expected += f" within {report.rto_target_seconds:g}s"
        return Verdict(target, "drill", report.ok, report.summary(), expected)

    async def _verify(self, target: str) -> Verdict:
        config = self.policy.targets[target].verify
        try:
            results = await verify(self.policy, target, every=bool(config and config.all))
        except DbguardianError as error:
            self.metrics.verify_last_result.labels(target).set(0)
            return Verdict(target, "verify", False, str(error), "stored objects match their manifests")
        failed = [f"{r.storage}:{r.key}: {r.error}" for r in results if not r.ok]
        self.metrics.verify_last_result.labels(target).set(0 if failed else 1)
        observed = "; ".join(failed) or f"{len(results)} object(s) match their manifests"
        return Verdict(target, "verify", not failed, observed, "stored objects match their manifests")

    async def _ping(self, pings: PingsConfig, event: str, target: str) -> None:
        if getattr(pings, event) is None and getattr(pings, f"{event}_file") is None:
            return
        ok = await ping(pings, event, target)
        self.metrics.pings.labels(target, event, "success" if ok else "failure").inc()

    async def run_health(self, target: str) -> None:
        """Run the health checks of one target, export them, and feed the alert state machines."""
        if target not in self.policy.targets:
            return
        lock = self.health_locks.setdefault(target, asyncio.Lock())
        if lock.locked():
            return  # a check of this target is running; it will see the same facts
        async with lock:
            now = self.clock()
            running = self.target_locks.setdefault(target, asyncio.Lock()).locked()
            try:
                verdicts, facts = await check_target(self.policy, target, now, running=running)
            except Exception as error:  # a broken check must not stop the others, or the daemon
                log.exception("health check crashed", target=target, error=repr(error))
                return
            for verdict in verdicts:
                self.metrics.health_ok.labels(target, verdict.check).set(1 if verdict.ok else 0)
                if not verdict.ok:
                    log.warning("health check failing", target=target, check=verdict.check, observed=verdict.observed)
            self._export_ages(target, facts, now)
            self.metrics.health_last_run.set(now.timestamp())
            await self.alerter.process(verdicts, now, self._renotify)
            self.metrics.alerts_firing.set(len(self.alerter.firing()))

    def _export_ages(self, target: str, facts: TargetFacts, now: datetime) -> None:
        newest: dict[tuple[str, str], datetime] = {}
        for backup in facts.backups:
            for storage in backup.storages:
                key = (backup.tier, storage)
                newest[key] = max(newest.get(key, backup.started_at), backup.started_at)
        for (tier, storage), moment in newest.items():
            self.metrics.backup_age.labels(target, tier, storage).set((now - moment).total_seconds())

    def _renotify(self, target: str) -> timedelta:
        if target in self.policy.targets:
            return self.policy.health_rules(target).renotify
        return HEALTH_DEFAULTS.renotify

    async def _policy_verdict(self, ok: bool, observed: str) -> None:
        verdict = Verdict("(daemon)", "policy_reload", ok, observed, "the policy file on disk is valid")
        try:
            await self.alerter.process([verdict], self.clock(), self._renotify)
        except Exception as error:  # alerting must never break reloading
            log.exception("alerting on policy reload failed", error=repr(error))

    def _record_success(self, labels: tuple[str, str], manifest: Manifest) -> None:
        self.metrics.last_success.labels(*labels).set(manifest.started_at.timestamp())
        self.metrics.last_stored_bytes.labels(*labels).set(manifest.size_bytes)
        self.metrics.last_raw_bytes.labels(*labels).set(manifest.raw_size_bytes)

    async def _prune(self, target: str) -> None:
        """Retention after every successful backup of the target (still under the target's lock)."""
        try:
            pruned = await prune_target(self.policy, target, now=self.clock())
        except Exception as error:  # pruning problems are reported, never fatal
            log.exception("prune crashed", target=target, error=repr(error))
            self.metrics.prune_runs.labels(target, "failure").inc()
            return
        for storage_name, _ in pruned.deleted:
            self.metrics.pruned_backups.labels(target, storage_name).inc()
        self.metrics.prune_runs.labels(target, "failure" if pruned.errors else "success").inc()

    async def _start_catch_up(self) -> None:
        try:
            records = await read_catalog(self.policy)
        except DbguardianError as error:
            log.error("catalog unreadable at start; no catch-up", error=str(error))
            return
        newest = newest_by_tier(records)
        for (target, tier), moment in newest.items():
            if tier != SAFETY_TIER:
                self.metrics.last_success.labels(target, tier).set(moment.timestamp())
        if not self.policy.catch_up:
            return
        for item in catch_up_plan(self.specs.values(), newest, self.clock()):
            log.warning("catching up a missed run", job=item.spec.id, reason=item.reason)
            self.metrics.missed_runs.labels(item.spec.target, item.spec.tier).inc()
            asyncio.create_task(self.run_job(item.spec, reason="catch-up"))  # noqa: RUF006 (tracked in self.running)

    def _on_missed(self, event: JobExecutionEvent) -> None:
        spec = self.specs.get(event.job_id)
        if spec is not None:
            log.warning("scheduled run missed (too late to start)", job=spec.id, due=str(event.scheduled_run_time))
            self.metrics.missed_runs.labels(spec.target, spec.tier).inc()

    # ----------------------------------------------------------------------------- HTTP
    def _metrics(self) -> Response:
        self.metrics.set_next_runs(self.job_rows())
        return Response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    def _healthz(self) -> Response:
        return Response(200, b"ok\n")

    def _readyz(self) -> Response:
        problems = []
        if self.scheduler is None or not self.scheduler.running:
            problems.append("scheduler not running")
        if time.monotonic() - self.heartbeat > HEARTBEAT_STALE_SECONDS:
            problems.append("heartbeat stale")
        if self.stopping:
            problems.append("stopping")
        if problems:
            return Response(503, ("not ready: " + ", ".join(problems) + "\n").encode())
        return Response(200, f"ready: {self.status()}\n".encode())


def describe(spec: JobSpec) -> dict[str, Any]:
    return {
        "job": spec.id,
        "kind": spec.kind,
        "target": spec.target,
        "tier": spec.tier,
        "trigger": spec.describe_trigger(),
    }


async def run_daemon(policy_path: Path, policy: Policy, stop_after: float | None = None) -> int:
    daemon = Daemon(policy_path, policy)
    if stop_after is not None:
        asyncio.get_running_loop().call_later(stop_after, daemon.request_stop)
    return await daemon.run()
