"""The daemon's job runner: locks, slots, cancellation, and applying what jobs report.

The runner knows kinds only through :class:`dbguardian.jobs.outcome.JobKind`'s flags (exclusive,
coalesce, mode); it has no branch per kind. One run:

1. exclusive kinds take the target's lock, then a slot (``max_concurrent_backups``); coalescing kinds
   skip when one of theirs for the target is still running;
2. ``kind.run(ctx, spec)`` returns a :class:`JobOutcome` (a crash is logged and counts as a failure,
   never takes the daemon down); observations go to the metrics as soon as it returns (or at once,
   through ``ctx.observe_now``);
3. follow-ups: exclusive ones run under the lock still held, the others after it is released;
4. verdicts go to the alerter only after the lock and the slot are released: a slow or failing alert
   channel must not hold up the next backup.

Continuous kinds get a supervisor task each: restarted with exponential backoff when they fail or
return early, asked to stop through their ``ctx.stopping`` (daemon stop, or a reload that removes or
changes them) and cancelled when they do not stop within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from dbguardian.alerts.dispatch import Alerter, renotify_for
from dbguardian.handover import Handover
from dbguardian.health import Verdict
from dbguardian.jobs.outcome import JobCancelled, JobContext, JobKind, JobOutcome, Observation
from dbguardian.jobs.registry import KINDS
from dbguardian.leadership import AlwaysLeader, Leadership
from dbguardian.logs import get_logger
from dbguardian.metrics import Metrics, apply_observation
from dbguardian.policy import Policy
from dbguardian.schedule import JobSpec

log = get_logger("dbguardian.runner")

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 300.0
"""A continuous job that ran this long before failing starts its backoff from the beginning again."""
CONTINUOUS_STOP_GRACE = 30.0
"""How long a continuous job removed by a reload may take to finish its step before it is cancelled."""


@dataclass
class _Continuous:
    spec: JobSpec
    stop: asyncio.Event
    task: asyncio.Task[None]
    config: object = None
    """What of the policy the job runs with (see ``_job_config``): a reload that changes it restarts the job."""


def _job_config(policy: Policy, target: str) -> object:
    """The target's settings and its storages' configs: a continuous job reads the policy once, at start."""
    config = policy.targets.get(target)
    if config is None:
        return None
    return (config, tuple(policy.storage.get(name) for name in config.storage))


class Runner:
    def __init__(
        self,
        policy: Policy,
        metrics: Metrics,
        alerter: Alerter,
        clock: Callable[[], datetime],
        kinds: Mapping[str, JobKind] = KINDS,
        on_finished: Callable[[], None] | None = None,
        leadership: Leadership | None = None,
        handover: Handover | None = None,
    ) -> None:
        self.policy = policy
        self.leadership: Leadership = leadership or AlwaysLeader()
        self.handover = handover
        """Publishes and adopts each target's safety state when several daemons share the policy."""
        self._leading: set[str] = set()
        self._watching = False
        self.metrics = metrics
        self.alerter = alerter
        self.clock = clock
        self.kinds = kinds
        self.on_finished = on_finished
        """Called after every top-level run (the daemon refreshes systemd's STATUS=)."""
        self.specs: dict[str, JobSpec] = {}
        self.running: set[asyncio.Task[None]] = set()
        self.continuous: dict[str, _Continuous] = {}
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
        self.leadership.configure(policy)
        if self.handover is not None:
            self.handover.configure(policy)
        if policy.max_concurrent_backups != self._slots_size:  # jobs already waiting keep the old limit
            self._slots = asyncio.Semaphore(policy.max_concurrent_backups)
            self._slots_size = policy.max_concurrent_backups
        self._sync_continuous()

    def target_busy(self, target: str) -> bool:
        return self._lock(target).locked()

    def _lock(self, target: str) -> asyncio.Lock:
        return self._target_locks.setdefault(target, asyncio.Lock())

    def context(self, reason: str, stopping: asyncio.Event | None = None, job: str = "(now)") -> JobContext:
        return JobContext(
            self.policy,
            self.clock,
            list(self.specs.values()),
            self.target_busy,
            stopping or self.stopping,
            lambda observation: self._publish(observation, job),
            reason,
            lambda verdicts: self._alert(verdicts, job),
        )

    # ----------------------------------------------------------------------------- one run
    def start(self, spec: JobSpec, reason: str) -> asyncio.Task[None]:
        """Run ``spec`` in a task of its own, tracked so shutdown can wait for it or cancel it."""
        task = asyncio.create_task(self.run(spec, reason))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def run(self, spec: JobSpec, reason: str) -> None:
        """One run of ``spec`` with its follow-ups; verdicts are alerted once no lock is held."""
        task = asyncio.current_task()
        # Track the task (shutdown waits for it) unless an outer run of the same task already does.
        tracked = task if task is not None and task not in self.running else None
        if tracked is not None:
            self.running.add(tracked)
        try:
            await self._run(self.kinds[spec.kind], spec, reason)
        finally:
            if tracked is not None:
                self.running.discard(tracked)
                if self.on_finished is not None:
                    self.on_finished()

    async def _run(self, kind: JobKind, spec: JobSpec, reason: str) -> None:
        if spec.target not in self.policy.targets:
            return  # removed by a reload while it waited
        if reason != "follow-up" and not await self.claim(spec.target):
            log.debug("another daemon leads the target; not running", job=spec.id, reason=reason)
            return
        verdicts: list[Verdict] = []
        after: list[str] = []
        if kind.exclusive:
            async with self._lock(spec.target), self._slots:
                if self.stopping.is_set():
                    return
                queue = [(kind, spec, reason)]
                while queue:  # the job, then its exclusive follow-ups (and theirs), under the same lock
                    current, current_spec, why = queue.pop(0)
                    outcome = await self._execute(current, current_spec, why)
                    verdicts += outcome.verdicts
                    for name in outcome.follow_ups:
                        follow = self.kinds[name]
                        if follow.exclusive:
                            queue.append((follow, _follow_spec(name, spec), "follow-up"))
                        else:
                            after.append(name)
        elif kind.coalesce:
            lock = self._coalesce_locks.setdefault(spec.id, asyncio.Lock())
            if lock.locked():
                return  # one is running; it will see the same facts
            async with lock:
                outcome = await self._execute(kind, spec, reason)
            verdicts, after = outcome.verdicts, outcome.follow_ups
        else:
            outcome = await self._execute(kind, spec, reason)
            verdicts, after = outcome.verdicts, outcome.follow_ups
        await self._alert(verdicts, spec.id)
        for name in after:
            if not self.stopping.is_set():
                await self.run(_follow_spec(name, spec), "follow-up")
        if reason != "follow-up":
            await self._publish_state(spec.target)

    async def _execute(self, kind: JobKind, spec: JobSpec, reason: str, stopping: asyncio.Event | None = None) -> JobOutcome:
        counted = kind.exclusive and kind.mode != "follow_up"  # dbguardian_jobs_running counts jobs, not their tails
        if counted:
            self.metrics.running.labels(kind.name).inc()
        try:
            outcome = await kind.run(self.context(reason, stopping, spec.id), spec)
        except asyncio.CancelledError as error:
            self.apply(error.outcome if isinstance(error, JobCancelled) else JobOutcome(result="cancelled"), spec.id)
            raise
        except Exception as error:  # a bug in one kind must not take the daemon down with it
            log.exception("job crashed", job=spec.id, error=repr(error))
            outcome = JobOutcome(result="failure")
        finally:
            if counted:
                self.metrics.running.labels(kind.name).dec()
        self.apply(outcome, spec.id)
        log.debug("job finished", job=spec.id, reason=reason, result=outcome.result)
        return outcome

    async def _alert(self, verdicts: list[Verdict], job: str) -> None:
        if not verdicts:
            return
        try:
            await self.alerter.process(verdicts, self.clock(), self.renotify)
            self.metrics.alerts_firing.set(len(self.alerter.firing()))
        except Exception as error:  # alerting problems must not break the job loop
            log.exception("alerting failed", job=job, error=repr(error))

    def apply(self, outcome: JobOutcome, job: str) -> None:
        for observation in outcome.observations:
            self._publish(observation, job)

    def _publish(self, observation: Observation, job: str) -> None:
        try:
            apply_observation(self.metrics, observation)
        except (AttributeError, ValueError) as error:  # a kind naming a metric wrongly is a bug, not an outage
            log.error("job reported an unknown metric", job=job, metric=observation.metric, error=str(error))

    def renotify(self, target: str) -> timedelta:
        return renotify_for(self.policy, target)

    async def catch_up(self, *, enabled: bool, targets: set[str] | None = None, cron_only: bool = False) -> None:
        """At start (or on taking over ``targets``), each kind that keeps a catalog says what it missed."""
        for kind in self.kinds.values():
            if kind.catch_up is None:
                continue
            specs = [spec for spec in self.specs.values()
                     if spec.kind == kind.name and (targets is None or spec.target in targets)]  # fmt: skip
            plan = await kind.catch_up(self.context("catch-up"), specs)
            self.apply(plan.outcome, kind.name)
            missed = [item for item in plan.missed if not (cron_only and item.spec.cron is None)] if enabled else []
            log.info("catch-up checked", kind=kind.name, enabled=enabled, missed=[item.spec.id for item in missed])
            for item in missed:
                log.warning("catching up a missed run", job=item.spec.id, reason=item.reason)
                self.metrics.missed_runs.labels(item.spec.target, item.spec.tier).inc()
                self.start(item.spec, "catch-up")

    # ----------------------------------------------------------------------------- leadership
    async def claim(self, target: str) -> bool:
        """Whether this daemon runs ``target``'s jobs now; on taking the lead, adopt the target's state
        from the daemon that led it before, and (after start) catch up what that daemon missed."""
        leads = await self.leadership.claim(target)
        await self._claimed(target, leads)
        return leads

    async def _claimed(self, target: str, leads: bool) -> None:
        for spec in self.specs.values():
            if spec.target == target:
                self.metrics.job_leader.labels(spec.id).set(1 if leads else 0)
        if leads and target not in self._leading:
            self._leading.add(target)
            if self.handover is not None:
                try:
                    await self.handover.adopt(target)
                except Exception as error:  # the state of one target must not stop its jobs
                    log.exception("taking over the target's state failed", target=target, error=repr(error))
            if self._watching:
                log.warning("took over a target from another daemon", target=target)
                asyncio.get_running_loop().call_soon(self._catch_up_later, target)
        elif not leads:
            self._leading.discard(target)

    def _catch_up_later(self, target: str) -> None:
        # Interval jobs are left to their next fire, at most one period away (a catch-up now would
        # run the same backup twice within moments); a cron job's next fire can be a day away.
        task = asyncio.create_task(self.catch_up(enabled=self.policy.catch_up, targets={target}, cron_only=True))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def watch_leadership(self) -> None:
        """Every ``coordination.check_every``: confirm or take each target's lead (so a follower takes
        over a dead leader's targets between their runs, and ``dbguardian_job_leader`` stays true)."""
        self._watching = True
        while not self.stopping.is_set():
            try:
                await self.leadership.prune()  # targets a reload removed: their locks are given back
                await self.claim_all()
            except Exception as error:  # never let a bug stop the watch
                log.exception("leadership check failed", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.policy.coordination.check_every.total_seconds())

    async def claim_all(self) -> None:
        """Every target's lead in one pass (two queries per session): at start, before the daemon's own
        catch-up, and then every ``check_every`` from :meth:`watch_leadership`."""
        for target, leads in (await self.leadership.claim_many(list(self.policy.targets))).items():
            await self._claimed(target, leads)

    async def _publish_state(self, target: str) -> None:
        if self.handover is None or target not in self._leading:
            return
        try:
            await self.handover.publish(target, self.clock())
        except Exception as error:  # publishing is best effort; the next run publishes again
            log.exception("publishing the target's state failed", target=target, error=repr(error))

    # ----------------------------------------------------------------------------- continuous jobs
    def _sync_continuous(self) -> None:
        wanted = {job_id: spec for job_id, spec in self.specs.items() if self.kinds[spec.kind].mode == "continuous"}
        for job_id, job in list(self.continuous.items()):
            if wanted.get(job_id) != job.spec or _job_config(self.policy, job.spec.target) != job.config:
                log.info("continuous job removed or changed by the policy; stopping it", job=job_id)
                del self.continuous[job_id]
                job.stop.set()
                self._cancel_later(job.task, CONTINUOUS_STOP_GRACE)
        for job_id, spec in wanted.items():
            if job_id not in self.continuous and not self.stopping.is_set():
                stop = asyncio.Event()
                task = asyncio.create_task(self._supervise(spec, stop))
                self.continuous[job_id] = _Continuous(spec, stop, task, _job_config(self.policy, spec.target))

    def _cancel_later(self, task: asyncio.Task[None], grace: float) -> None:
        """Cancel ``task`` if it has not finished within ``grace`` seconds (tracked, so shutdown sees it)."""

        async def deadline() -> None:
            # Its own failures were logged by the supervisor; here only the deadline matters.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=grace)
            task.cancel()

        watcher = asyncio.create_task(deadline())
        self.running.add(watcher)
        watcher.add_done_callback(self.running.discard)

    async def _supervise(self, spec: JobSpec, stop: asyncio.Event) -> None:
        kind = self.kinds[spec.kind]
        delay = BACKOFF_START
        loop = asyncio.get_running_loop()
        while not (stop.is_set() or self.stopping.is_set()):
            if not await self.claim(spec.target):  # a follower waits; it runs the job once it leads
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.policy.coordination.check_every.total_seconds())
                continue
            started = loop.time()
            run_stop = asyncio.Event()
            watcher = asyncio.create_task(self._stop_when_not_leading(spec.target, stop, run_stop))
            try:
                outcome = await self._execute(kind, spec, "continuous", run_stop)
            finally:
                run_stop.set()
                watcher.cancel()
            await self._alert(outcome.verdicts, spec.id)
            await self._publish_state(spec.target)
            if stop.is_set() or self.stopping.is_set():
                break
            if spec.target not in self._leading:
                log.warning("continuous job stopped: another daemon leads the target now", job=spec.id)
                continue
            delay = BACKOFF_START if loop.time() - started > BACKOFF_RESET_AFTER else delay
            log.warning("continuous job ended; restarting", job=spec.id, after_seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _stop_when_not_leading(self, target: str, stop: asyncio.Event, run_stop: asyncio.Event) -> None:
        """Ask a continuous run to stop when the daemon stops, the job is removed, or the lead is lost."""
        interval = self.policy.coordination.check_every.total_seconds()
        while not run_stop.is_set():
            if stop.is_set() or self.stopping.is_set() or not await self.claim(target):
                run_stop.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    # ----------------------------------------------------------------------------- shutdown
    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs; wait ``grace`` seconds for running and continuous jobs; cancel the rest."""
        self.stopping.set()
        for job in self.continuous.values():
            job.stop.set()
        pending = {task for task in (*self.running, *self._continuous_tasks()) if not task.done()}
        if not pending:
            return
        _, still_running = await asyncio.wait(pending, timeout=grace)
        if still_running:
            log.warning("grace period over: cancelling running jobs", jobs=len(still_running))
            self.cancel_all()
            await asyncio.wait(still_running, timeout=30)

    def cancel_all(self) -> None:
        for task in (*self.running, *self._continuous_tasks()):
            task.cancel()

    def _continuous_tasks(self) -> list[asyncio.Task[None]]:
        return [job.task for job in self.continuous.values()]


def _follow_spec(kind: str, parent: JobSpec) -> JobSpec:
    return JobSpec(kind, parent.target, "-", None, None, parent.timezone)
