"""The contract between the daemon and a kind of job.

A kind (backup, health, drill, verify, prune; the WAL shipper next) is one module that exposes a
:class:`JobKind`: how the policy turns into its job specs, and ``async run(ctx, spec) -> JobOutcome``.
A run does its work and *reports*: verdicts for the alert state machines, metric observations, and
follow-ups (other kinds to run for the same target next). It never touches the daemon's metrics
registry, alerter or locks; the runner applies the outcome. So a kind is testable without a daemon,
and the daemon has no branch per kind.

Modes:

- ``scheduled``: fired by its trigger (cron / every), at most one at a time per job;
- ``continuous``: started with the daemon, restarted with backoff when it fails or returns, asked to
  stop through ``ctx.stopping`` on SIGTERM (and cancelled after the grace period);
- ``follow_up``: never scheduled; runs only when another outcome asks for it.

``exclusive`` kinds hold their target's lock and one of the ``max_concurrent_backups`` slots: a
backup, drill or verify of a target never overlaps another of them. ``coalesce`` kinds skip a run
while one of the same kind and target is still going (it will see the same facts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from dbguardian.health import Verdict
from dbguardian.policy import Policy
from dbguardian.schedule import CatchUp, JobSpec

Mode = Literal["scheduled", "continuous", "follow_up"]
MetricOp = Literal["set", "inc", "dec", "observe"]
Result = Literal["success", "partial", "failure", "cancelled"]


@dataclass(frozen=True)
class Observation:
    """One change to an exported metric: ``metric`` is an attribute of :class:`dbguardian.metrics.Metrics`."""

    metric: str
    labels: tuple[str, ...] = ()
    value: float = 1.0
    op: MetricOp = "set"


@dataclass
class JobOutcome:
    result: Result = "success"
    """For the log line the runner writes at the end of each run; metrics carry kind-specific results."""
    verdicts: list[Verdict] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    follow_ups: list[str] = field(default_factory=list)
    """Kinds to run next for the same target: exclusive ones under the lock this job held, others after."""

    def observe(self, metric: str, *labels: str, value: float = 1.0, op: MetricOp = "set") -> None:
        self.observations.append(Observation(metric, labels, value, op))


class JobCancelled(asyncio.CancelledError):
    """Raised by a job instead of a bare CancelledError to hand over what it measured before it was
    cancelled (a cancelled backup still counts as a run, with its duration)."""

    def __init__(self, outcome: JobOutcome) -> None:
        super().__init__("job cancelled")
        self.outcome = outcome


async def _no_report(verdicts: list[Verdict]) -> None:
    """Outside a daemon (tests, one-off runs) verdicts reported during a run go nowhere."""


@dataclass(frozen=True)
class JobContext:
    """What a running job may know about the daemon around it (all read-only)."""

    policy: Policy
    clock: Callable[[], datetime]
    specs: Sequence[JobSpec]
    """The whole job table (health checks judge missed runs against it)."""
    target_busy: Callable[[str], bool]
    """Whether an exclusive job of the target is running (a health check then expects no missed run)."""
    stopping: asyncio.Event
    """Set when the daemon stops (or a reload removes a continuous job): finish the current step and return."""
    publish: Callable[[Observation], None]
    """Apply an observation now rather than with the outcome (e.g. "a backup attempt started")."""
    reason: str = "schedule"
    """Why this run started: schedule, catch-up, follow-up, continuous, manual."""
    report: Callable[[list[Verdict]], Awaitable[None]] = _no_report
    """Hand verdicts to the alerter now rather than with the outcome: a continuous job (the WAL shipper)
    never returns an outcome while it runs, yet must alert when a storage stops taking WAL."""

    def observe_now(self, metric: str, *labels: str, value: float = 1.0, op: MetricOp = "set") -> None:
        self.publish(Observation(metric, labels, value, op))


@dataclass(frozen=True)
class CatchUpPlan:
    """What a kind found at the daemon's start: gauges to set, and missed runs to start now."""

    outcome: JobOutcome
    missed: list[CatchUp]


@dataclass(frozen=True)
class JobKind:
    name: str
    mode: Mode
    specs: Callable[[Policy], list[JobSpec]]
    run: Callable[[JobContext, JobSpec], Awaitable[JobOutcome]]
    exclusive: bool = False
    coalesce: bool = False
    catch_up: Callable[[JobContext, Sequence[JobSpec]], Awaitable[CatchUpPlan]] | None = None
    """At start: the kind's missed runs (started when the policy's ``catch_up`` is on) and its gauges."""

    def __post_init__(self) -> None:
        if self.exclusive and self.coalesce:
            raise ValueError(f"job kind {self.name!r}: exclusive and coalesce exclude each other")
        if self.mode == "continuous" and (self.exclusive or self.coalesce or self.catch_up is not None):
            raise ValueError(f"job kind {self.name!r}: a continuous kind holds no lock and catches nothing up")


def no_specs(policy: Policy) -> list[JobSpec]:
    """For follow-up kinds, which are never in the job table on their own."""
    return []
