"""What the daemon does around a job, done once: for installs that never run the daemon (cron, systemd timers).

The daemon wraps a scheduled backup in dead-man pings, prunes the target after a success and runs the
health checks after it, whose verdicts drive the alert state machine; its scheduled health job does the
same and exports gauges. ``dbguardian backup TARGET --tier T`` (a schedule tier) and ``dbguardian check
--notify/--textfile`` get the same from here, built from the very pieces the daemon uses — the backup
kind's pings and backup routine, ``prune_target``, the health kind's ``run``, ``Alerter.process`` on the
same ``state_dir/alerts.json``, ``metrics.apply_observation`` into a fresh ``Metrics`` registry — in the
daemon's order: backup → prune → health → alerts. So a failed cron backup alerts once, a later ``check
--notify`` knows it already did, and a good run sends "resolved". It imports those pieces and no others
(not the runner, not the job table's other kinds): a cron backup's start-up is part of its time (issue 14).

One-shot processes may overlap (a long backup and a check from cron): they take ``state_dir/alerts.lock``
around the alert state, so two of them never both send "firing" for one incident. The daemon does not take
that lock; run the one-shot alerting or the daemon on a ``state_dir``, not both.
"""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dbguardian.alerts.dispatch import Alerter, renotify_for
from dbguardian.alerts.model import Notification
from dbguardian.backup.logical import PartialBackup
from dbguardian.catalog.manifest import AnyManifest
from dbguardian.files import fsync_dir
from dbguardian.health import Verdict
from dbguardian.jobs import backup as backup_kind
from dbguardian.jobs import health as health_kind
from dbguardian.jobs.outcome import JobContext, Observation
from dbguardian.jobs.prune import PruneResult, prune_target
from dbguardian.logs import get_logger
from dbguardian.metrics import Metrics, apply_observation
from dbguardian.policy import Policy
from dbguardian.schedule import JobSpec

log = get_logger("dbguardian.oneshot")

Clock = Callable[[], datetime]
TEXTFILE_MODE = 0o644
"""The textfile collector (node_exporter, another user) must read it; it holds names and numbers, no secrets."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class BackupRun:
    manifest: AnyManifest | None = None
    """The new backup (also of a partial run: valid on the storages that took it)."""
    error: Exception | None = None
    """Why the backup failed (``PartialBackup`` for some storages); None after a success."""
    pruned: PruneResult | None = None
    notifications: list[Notification] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What went wrong around the backup (pings, prune, alerts): reported, the backup's result stands."""


@dataclass
class CheckRun:
    verdicts: list[Verdict] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    """What the daemon's health job would export, plus the newest backup of each tier."""
    notifications: list[Notification] = field(default_factory=list)
    alerts_firing: int | None = None
    problems: list[str] = field(default_factory=list)


def _context(policy: Policy, clock: Clock, observations: list[Observation]) -> JobContext:
    """A job context with no daemon around it: nothing else runs here (``target_busy`` is never true) and
    observations are collected, not exported. Its job table is the backup jobs: the health kind judges
    missed runs by them alone (``schedule.catch_up_plan``), and the whole table (``jobs.registry``) would
    import every kind's module."""
    return JobContext(policy, clock, backup_kind.specs(policy), lambda target: False, asyncio.Event(),
                      observations.append, reason="manual")  # fmt: skip


def _health_spec(policy: Policy, target: str) -> JobSpec:
    """The runner's follow-up spec for ``health`` (the health kind reads only the target)."""
    return JobSpec("health", target, "-", None, None, policy.timezone)


# ------------------------------------------------------------------------------------------------- backup
async def scheduled_backup(
    policy: Policy, target: str, tier: str, *, prune: bool = True, clock: Clock = utcnow
) -> BackupRun:
    """One backup of a schedule tier as the daemon runs it: start ping, the backup, success or fail ping,
    prune after a success (unless ``prune`` is false), then the health checks and their alerts.

    A failed backup is returned in ``error`` (not raised) once everything after it has run; only a cancel
    (SIGINT/SIGTERM) ends it early, without a fail ping, as in the daemon.
    """
    run = BackupRun()
    observations: list[Observation] = []
    ctx = _context(policy, clock, observations)
    pings = policy.targets[target].pings
    await backup_kind.send_ping(ctx, pings, "start", target)
    try:
        run.manifest = await backup_kind.take_backup(policy, target, tier, clock)
    except PartialBackup as partial:  # either kind
        run.manifest, run.error = partial.manifest, partial
    except Exception as error:  # a failure (a crash too) still pings, alerts and is then reported
        run.error = error
    await backup_kind.send_ping(ctx, pings, "fail" if run.error else "success", target)
    run.problems += [
        f"the {o.labels[1]} ping failed (see the log)"
        for o in observations
        if o.metric == "pings" and o.labels[2] == "failure"
    ]
    if run.error is None and prune:
        run.pruned = await _prune(policy, target, clock, run.problems)
    try:
        outcome = await health_kind.run(ctx, _health_spec(policy, target))
    except Exception as error:  # the runner logs a crashed health run and alerts nothing
        log.exception("health checks after the backup crashed", target=target, error=repr(error))
        run.problems.append(f"the health checks after the backup failed: {error}")
        return run
    run.notifications, _ = await _alert(policy, outcome.verdicts, clock(), run.problems)
    return run


async def _prune(policy: Policy, target: str, clock: Clock, problems: list[str]) -> PruneResult | None:
    try:
        pruned = await prune_target(policy, target, now=clock())
    except Exception as error:  # as in the daemon: pruning problems are reported, never fatal
        log.exception("prune after the backup failed", target=target, error=repr(error))
        problems.append(f"prune failed: {error}")
        return None
    problems += [f"prune failed on {error}" for error in pruned.errors]
    return pruned


# ------------------------------------------------------------------------------------------------- alerts
async def _alert(
    policy: Policy, verdicts: Iterable[Verdict], now: datetime, problems: list[str]
) -> tuple[list[Notification], int | None]:
    """The daemon's alerting step: state machines advanced, messages queued and sent, the outbox retried.
    Returns what was produced and how many alerts fire now (None when alerting failed)."""
    try:
        alerter = Alerter(policy)  # exclusive with the daemon and other one-shots on this host (its flock)
        produced = await alerter.process(verdicts, now, functools.partial(renotify_for, policy))
        waiting = await alerter.flush(now)  # nothing due is left: this only counts what waits
        firing = len(alerter.firing())
    except Exception as error:  # reported; the run's own result stands
        log.exception("alerting failed", error=repr(error))
        problems.append(f"alerting failed: {error}")
        return [], None
    if waiting:
        problems.append(f"{waiting} alert message(s) not delivered yet: kept in {alerter.path}, retried on the next run")
    return produced, firing


# ------------------------------------------------------------------------------------------------- check
async def check(policy: Policy, targets: Iterable[str], *, notify: bool, gauges: bool, clock: Clock = utcnow) -> CheckRun:
    """The daemon's health job for each target: verdicts (alerted with ``notify``) and, with ``gauges``,
    its observations plus the newest backup of each tier (as the backup kind exports at the daemon's start)."""
    names = list(targets)
    result = CheckRun()
    ctx = _context(policy, clock, result.observations)
    for name in names:
        outcome = await health_kind.run(ctx, _health_spec(policy, name))
        result.verdicts += outcome.verdicts
        result.observations += outcome.observations
    if gauges:
        plan = await backup_kind.catch_up(ctx, [])
        result.observations += [o for o in plan.outcome.observations if o.labels[:1] and o.labels[0] in names]
    if notify:
        result.notifications, result.alerts_firing = await _alert(policy, result.verdicts, clock(), result.problems)
    return result


def render_metrics(observations: Iterable[Observation], *, alerts_firing: int | None = None) -> bytes:
    """The observations applied to a fresh registry, in Prometheus' text format."""
    metrics = Metrics()
    for observation in observations:
        apply_observation(metrics, observation)
    if alerts_firing is not None:
        metrics.alerts_firing.set(alerts_firing)
    return metrics.render()


def write_textfile(path: Path, content: bytes) -> None:
    """Replace ``path`` atomically (temp file in its directory, fsync, rename, directory fsync): the textfile
    collector reads ``*.prom`` files at any moment and must never see half a file. The temp name does not
    end in ``.prom``, so the collector ignores it. Mode 0644: the collector runs as another user, and the
    file holds metric names, target/storage/tier names and numbers, no secrets."""
    directory = path.parent
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), TEXTFILE_MODE)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(directory)
