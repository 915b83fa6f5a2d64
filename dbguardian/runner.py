"""The daemon's job runner: locks, slots, cancellation, and applying what jobs report.

The runner knows kinds only through :class:`dbguardian.jobs.outcome.JobKind`'s flags (exclusive,
coalesce, mode); it has no branch per kind. One run:

1. exclusive kinds take the target's lock, then a slot (``max_concurrent_backups``); coalescing kinds
   skip when one of theirs for the target is still running;
2. ``kind.run(ctx, spec)`` returns a :class:`JobOutcome` (a crash is logged and counts as a failure,
   never takes the daemon down);
3. observations go to the metrics, verdicts to the alerter, exclusive follow-ups run under the lock
   still held, the others after it is released.

Continuous kinds get a supervisor task each: restarted with exponential backoff when they fail or
return early, asked to stop through ``ctx.stopping`` and cancelled after the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from dbguardian.alerts.dispatch import Alerter
from dbguardian.jobs.outcome import JobCancelled, JobContext, JobKind, JobOutcome, Observation
from dbguardian.jobs.registry import KINDS
from dbguardian.logs import get_logger
from dbguardian.metrics import Metrics
from dbguardian.policy import HEALTH_DEFAULTS, Policy
from dbguardian.schedule import JobSpec

log = get_logger("dbguardian.runner")

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 300.0
"""A continuous job that ran this long before failing starts its backoff from the beginning again."""


class Runner:
    def __init__(
        self,
        policy: Policy,
        metrics: Metrics,
        alerter: Alerter,
        clock: Callable[[], datetime],
        kinds: Mapping[str, JobKind] = KINDS,
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        self.alerter = alerter
        self.clock = clock
        self.kinds = kinds
        self.specs: dict[str, JobSpec] = {}
        self.running: set[asyncio.Task[None]] = set()
        self.continuous: dict[str, asyncio.Task[None]] = {}
        self.stopping = asyncio.Event()
        self._target_locks: dict[str, asyncio.Lock] = {}
        self._coalesce_locks: dict[str, asyncio.Lock] = {}
        self._slots = asyncio.Semaphore(policy.max_concurrent_backups)
        self._slots_size = policy.max_concurrent_backups

    # ----------------------------------------------------------------------------- configuration
    def configure(self, policy: Policy, specs: dict[str, JobSpec]) -> None:
        """Take a new policy and job table (synchronously: part of the daemon's one-step swap)."""
        self.policy = policy
        self.specs = specs
        if policy.max_concurrent_backups != self._slots_size:  # jobs already waiting keep the old limit
            self._slots = asyncio.Semaphore(policy.max_concurrent_backups)
            self._slots_size = policy.max_concurrent_backups
        self._sync_continuous()

    def target_busy(self, target: str) -> bool:
        return self._lock(target).locked()

    def _lock(self, target: str) -> asyncio.Lock:
        return self._target_locks.setdefault(target, asyncio.Lock())

    def context(self, reason: str) -> JobContext:
        return JobContext(self.policy, self.clock, list(self.specs.values()), self.target_busy, self.stopping, reason)

    # ----------------------------------------------------------------------------- one run
    def start(self, spec: JobSpec, reason: str) -> asyncio.Task[None]:
        """Run ``spec`` in a task of its own, tracked so shutdown can wait for it or cancel it."""
        task = asyncio.create_task(self.run(spec, reason))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def run(self, spec: JobSpec, reason: str) -> None:
        kind = self.kinds[spec.kind]
        task = asyncio.current_task()
        # Track the task (shutdown waits for it) unless an outer run of the same task already does.
        tracked = task if task is not None and task not in self.running else None
        if tracked is not None:
            self.running.add(tracked)
        try:
            if kind.coalesce:
                lock = self._coalesce_locks.setdefault(spec.id, asyncio.Lock())
                if lock.locked():
                    return  # one is running; it will see the same facts
                async with lock:
                    await self._run_unlocked(kind, spec, reason)
            elif kind.exclusive:
                await self._run_exclusive(kind, spec, reason)
            else:
                await self._run_unlocked(kind, spec, reason)
        finally:
            if tracked is not None:
                self.running.discard(tracked)

    async def _run_exclusive(self, kind: JobKind, spec: JobSpec, reason: str) -> None:
        after: list[str] = []
        async with self._lock(spec.target), self._slots:
            if self.stopping.is_set() or spec.target not in self.policy.targets:
                return
            outcome = await self._execute(kind, spec, reason)
            for name in outcome.follow_ups:
                follow = self.kinds[name]
                if follow.exclusive:
                    await self._execute(follow, _follow_spec(name, spec), "follow-up")
                else:
                    after.append(name)
        for name in after:
            if not self.stopping.is_set():
                await self.run(_follow_spec(name, spec), "follow-up")

    async def _run_unlocked(self, kind: JobKind, spec: JobSpec, reason: str) -> None:
        if spec.target not in self.policy.targets and spec.target != "-":
            return
        await self._execute(kind, spec, reason)

    async def _execute(self, kind: JobKind, spec: JobSpec, reason: str) -> JobOutcome:
        if kind.exclusive:
            self.metrics.running.labels(kind.name).inc()
        try:
            outcome = await kind.run(self.context(reason), spec)
        except asyncio.CancelledError as error:
            self.apply(error.outcome if isinstance(error, JobCancelled) else JobOutcome(result="cancelled"), spec.id)
            raise
        except Exception as error:  # a bug in one kind must not take the daemon down with it
            log.exception("job crashed", job=spec.id, error=repr(error))
            outcome = JobOutcome(result="failure")
        finally:
            if kind.exclusive:
                self.metrics.running.labels(kind.name).dec()
        await self._report(outcome, spec)
        return outcome

    async def _report(self, outcome: JobOutcome, spec: JobSpec) -> None:
        self.apply(outcome, spec.id)
        if not outcome.verdicts:
            return
        try:
            await self.alerter.process(outcome.verdicts, self.clock(), self.renotify)
            self.metrics.alerts_firing.set(len(self.alerter.firing()))
        except Exception as error:  # alerting problems must not break the job loop
            log.exception("alerting failed", job=spec.id, error=repr(error))

    def apply(self, outcome: JobOutcome, job: str) -> None:
        for observation in outcome.observations:
            try:
                apply_observation(self.metrics, observation)
            except (AttributeError, ValueError) as error:  # a kind naming a metric wrongly is a bug, not an outage
                log.error("job reported an unknown metric", job=job, metric=observation.metric, error=str(error))

    def renotify(self, target: str) -> timedelta:
        if target in self.policy.targets:
            return self.policy.health_rules(target).renotify
        return HEALTH_DEFAULTS.renotify

    async def catch_up(self, *, enabled: bool) -> None:
        """At start, each kind that keeps a catalog says what it missed while the daemon was down."""
        for kind in self.kinds.values():
            if kind.catch_up is None:
                continue
            specs = [spec for spec in self.specs.values() if spec.kind == kind.name]
            plan = await kind.catch_up(self.context("catch-up"), specs)
            self.apply(plan.outcome, kind.name)
            missed = plan.missed if enabled else []
            log.info("catch-up checked", kind=kind.name, enabled=enabled, missed=[item.spec.id for item in missed])
            for item in missed:
                log.warning("catching up a missed run", job=item.spec.id, reason=item.reason)
                self.metrics.missed_runs.labels(item.spec.target, item.spec.tier).inc()
                self.start(item.spec, "catch-up")

    # ----------------------------------------------------------------------------- continuous jobs
    def _sync_continuous(self) -> None:
        wanted = {job_id: spec for job_id, spec in self.specs.items() if self.kinds[spec.kind].mode == "continuous"}
        for job_id, task in list(self.continuous.items()):
            if job_id not in wanted:
                log.info("continuous job removed from the policy; stopping it", job=job_id)
                task.cancel()
                del self.continuous[job_id]
        for job_id, spec in wanted.items():
            if job_id not in self.continuous and not self.stopping.is_set():
                self.continuous[job_id] = asyncio.create_task(self._supervise(spec))

    async def _supervise(self, spec: JobSpec) -> None:
        kind = self.kinds[spec.kind]
        delay = BACKOFF_START
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            started = loop.time()
            await self._execute(kind, spec, "continuous")
            if self.stopping.is_set():
                break
            delay = BACKOFF_START if loop.time() - started > BACKOFF_RESET_AFTER else delay
            log.warning("continuous job ended; restarting", job=spec.id, after_seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=delay)
            delay = min(delay * 2, BACKOFF_MAX)

    # ----------------------------------------------------------------------------- shutdown
    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs; wait ``grace`` seconds for running and continuous jobs; cancel the rest."""
        self.stopping.set()
        pending = {task for task in (*self.running, *self.continuous.values()) if not task.done()}
        if not pending:
            return
        _, still_running = await asyncio.wait(pending, timeout=grace)
        if still_running:
            log.warning("grace period over: cancelling running jobs", jobs=len(still_running))
            self.cancel_all()
            await asyncio.wait(still_running, timeout=30)

    def cancel_all(self) -> None:
        for task in (*self.running, *self.continuous.values()):
            task.cancel()


def _follow_spec(kind: str, parent: JobSpec) -> JobSpec:
    return JobSpec(kind, parent.target, "-", None, None, parent.timezone)


def apply_observation(metrics: Metrics, observation: Observation) -> None:
    metric = getattr(metrics, observation.metric)
    child = metric.labels(*observation.labels) if observation.labels else metric
    if observation.op == "set":
        child.set(observation.value)
    elif observation.op == "inc":
        child.inc(observation.value)
    elif observation.op == "dec":
        child.dec(observation.value)
    else:
        child.observe(observation.value)
