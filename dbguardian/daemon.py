"""``dbguardian run``: the long-running service's lifecycle.

Start (state directory, HTTP listener, job table, READY=1, continuous jobs, catch-up) → serve until
SIGTERM/SIGINT (stop starting jobs, wait ``shutdown_grace`` for running ones, cancel the rest, exit 0;
a second signal cancels at once). SIGHUP reloads: the new policy, its job table and its alert
channels are all built first; only when everything succeeded are they swapped in, in one step
(running jobs finish). Otherwise the old ones stay, the failure is counted and alerted.

What runs and how is the runner's business (:mod:`dbguardian.runner`); what each kind of job does,
its own module's (:mod:`dbguardian.jobs.registry`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbguardian.alerts.dispatch import Alerter, build_channels
from dbguardian.errors import DbguardianError, PolicyError
from dbguardian.handover import Handover
from dbguardian.health import Verdict
from dbguardian.http import HttpServer, Response
from dbguardian.jobs.registry import job_specs
from dbguardian.jobtable import JobTable
from dbguardian.leadership import leadership_for
from dbguardian.logs import get_logger
from dbguardian.metrics import Metrics
from dbguardian.notify import Notifier, heartbeat_loop
from dbguardian.policy import Policy, load_policy
from dbguardian.runner import Runner
from dbguardian.state import check_state_dir

log = get_logger("dbguardian.daemon")

HEARTBEAT_STALE_SECONDS = 15.0
OUTBOX_SECONDS = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Daemon:
    def __init__(self, policy_path: Path, policy: Policy, *, metrics: Metrics | None = None,
                 notifier: Notifier | None = None, clock: Callable[[], datetime] = utcnow) -> None:  # fmt: skip
        self.policy_path = policy_path
        self.policy = policy
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.alerter = Alerter(
            policy, count=lambda channel, result: self.metrics.alert_deliveries.labels(channel, result).inc()
        )
        self.leadership = leadership_for(policy)  # several daemons on one policy: one leads each target
        self.runner = Runner(policy, self.metrics, self.alerter, clock, on_finished=self._status_changed,
                             leadership=self.leadership, handover=Handover(policy, self.alerter))  # fmt: skip
        self.table: JobTable | None = None
        self.heartbeat = time.monotonic()
        self._stop = asyncio.Event()
        self._signals = 0
        self._tasks: set[asyncio.Task[object]] = set()

    async def run(self) -> int:
        check_state_dir(self.policy.state_dir)
        listen = self.policy.metrics
        http = HttpServer(
            listen.host, listen.port, {"/metrics": self._metrics, "/healthz": self._healthz, "/readyz": self._readyz}
        )
        await http.start()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._track(self.reload()))
        self._track(heartbeat_loop(self.notifier, self._beat))
        self._track(self._flush_outbox())
        try:
            self.table = JobTable(self.runner, self.metrics, self.policy.misfire_grace_time)
            self.table.install(self.policy, job_specs(self.policy), self.clock())
            self.table.scheduler.start()
            log.info("daemon started", jobs=sorted(self.runner.specs), metrics=f"http://{listen.host}:{http.port}/metrics")
            self.notifier.send("READY=1", f"STATUS={self.status()}", f"MAINPID={os.getpid()}")
            await self.runner.claim_all()
            await self.runner.catch_up(enabled=self.policy.catch_up)
            self._track(self.runner.watch_leadership())
            await self._stop.wait()
            self.notifier.send("STOPPING=1", "STATUS=stopping")
            self.table.scheduler.shutdown(wait=False)
            await self.runner.shutdown(self.policy.shutdown_grace.total_seconds())
        finally:
            for task in self._tasks:
                task.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await http.close()
            await self.leadership.close()
            self.notifier.close()
        log.info("daemon stopped")
        return 0

    def _track(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

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
            self.runner.cancel_all()

    async def _flush_outbox(self) -> None:
        """Retry undelivered alerts (a channel that was down) every few seconds."""
        while True:
            await asyncio.sleep(OUTBOX_SECONDS)
            try:
                await self.alerter.flush(self.clock())
            except Exception as error:  # never let delivery problems stop the loop
                log.exception("alert outbox flush failed", error=repr(error))

    def _status_changed(self) -> None:
        self.notifier.send(f"STATUS={self.status()}")

    def status(self) -> str:
        return self.table.status() if self.table is not None else "starting"

    async def reload(self) -> bool:
        """Build everything the new policy needs first; swap all of it in one step, or keep all of the old."""
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            policy = load_policy(self.policy_path)
            specs = job_specs(policy)
            channels = build_channels(policy)  # reads secret files: can fail like the policy itself
        except DbguardianError as error:
            problems = error.problems if isinstance(error, PolicyError) else [str(error)]
            for problem in problems:
                log.error("policy reload rejected; keeping the running policy", problem=problem)
            self.metrics.reloads.labels("failure").inc()
            self.metrics.last_reload_success.set(0)
            await self._policy_verdict(False, "; ".join(problems))
            self.notifier.send("READY=1", f"STATUS=reload rejected; {self.status()}")
            return False
        assert self.table is not None
        self.policy = policy
        self.table.install(policy, specs, self.clock())
        self.alerter.configure(policy, channels)
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_reload_success.set(1)
        await self._policy_verdict(True, "the reloaded policy is valid")
        log.info("policy reloaded", jobs=sorted(self.runner.specs))
        self.notifier.send("READY=1", f"STATUS={self.status()}")
        return True

    async def _policy_verdict(self, ok: bool, observed: str) -> None:
        verdict = Verdict("(daemon)", "policy_reload", ok, observed, "the policy file on disk is valid")
        try:
            await self.alerter.process([verdict], self.clock(), self.runner.renotify)
        except Exception as error:  # alerting must never break reloading
            log.exception("alerting on policy reload failed", error=repr(error))

    # ----------------------------------------------------------------------------- HTTP
    def _metrics(self) -> Response:
        self.metrics.set_next_runs(self.table.rows() if self.table is not None else [])
        return Response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    def _healthz(self) -> Response:
        return Response(200, b"ok\n")

    def _readyz(self) -> Response:
        problems = [problem for problem, failing in (
            ("scheduler not running", self.table is None or not self.table.scheduler.running),
            ("heartbeat stale", time.monotonic() - self.heartbeat > HEARTBEAT_STALE_SECONDS),
            ("stopping", self._stop.is_set()),
        ) if failing]  # fmt: skip
        if problems:
            return Response(503, ("not ready: " + ", ".join(problems) + "\n").encode())
        return Response(200, f"ready: {self.status()}\n".encode())


async def run_daemon(policy_path: Path, policy: Policy, stop_after: float | None = None) -> int:
    daemon = Daemon(policy_path, policy)
    if stop_after is not None:
        asyncio.get_running_loop().call_later(stop_after, daemon.request_stop)
    return await daemon.run()
