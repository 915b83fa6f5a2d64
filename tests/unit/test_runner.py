"""The job runner with kinds made for the test: no PostgreSQL, no storage, real asyncio and metrics."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dbguardian import runner as runner_module
from dbguardian.alerts.dispatch import Alerter
from dbguardian.health import Verdict
from dbguardian.jobs.outcome import JobCancelled, JobContext, JobKind, JobOutcome
from dbguardian.metrics import Metrics
from dbguardian.policy import Policy, parse_policy
from dbguardian.runner import Runner
from dbguardian.schedule import JobSpec

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def make_policy(tmp_path: Path, **extra: Any) -> Policy:
    return parse_policy(
        {
            "version": 1,
            "state_dir": str(tmp_path / "state"),
            "storage": {"local": {"type": "local", "path": str(tmp_path / "backups")}},
            "targets": {"app": {"dsn": "postgresql://backup@127.0.0.1:5432/app", "storage": ["local"]}},
            **extra,
        }
    )


def spec(kind: str, tier: str = "-") -> JobSpec:
    return JobSpec(kind, "app", tier, None, None, "UTC")


def kind(name: str, run: Callable[[JobContext, JobSpec], Awaitable[JobOutcome]], **flags: Any) -> JobKind:
    return JobKind(name, flags.pop("mode", "scheduled"), lambda policy: [], run, **flags)


def build(tmp_path: Path, kinds: dict[str, JobKind], policy: Policy | None = None) -> tuple[Runner, Metrics]:
    policy = policy or make_policy(tmp_path)
    policy.state_dir.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    return Runner(policy, metrics, Alerter(policy), lambda: NOW, kinds), metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_outcome_observations_verdicts_and_follow_ups(tmp_path: Path) -> None:
    order: list[str] = []

    async def work(ctx: JobContext, job: JobSpec) -> JobOutcome:
        order.append(f"work busy={ctx.target_busy('app')}")
        outcome = JobOutcome(follow_ups=["tidy", "look"])
        outcome.observe("last_success", "app", "daily", value=123.0)
        outcome.observe("runs", "app", "daily", "success", op="inc")
        return outcome

    async def tidy(ctx: JobContext, job: JobSpec) -> JobOutcome:
        order.append(f"tidy busy={ctx.target_busy('app')} reason={ctx.reason}")
        return JobOutcome()

    async def look(ctx: JobContext, job: JobSpec) -> JobOutcome:
        order.append(f"look busy={ctx.target_busy('app')}")
        return JobOutcome(verdicts=[Verdict("app", "looked", False, "bad", "good")])

    kinds = {
        "work": kind("work", work, exclusive=True),
        "tidy": kind("tidy", tidy, mode="follow_up", exclusive=True),
        "look": kind("look", look, mode="follow_up", coalesce=True),
    }
    runner, metrics = build(tmp_path, kinds)
    asyncio.run(runner.run(spec("work", "daily"), "schedule"))
    # exclusive follow-ups under the lock the job held; the others after it was released
    assert order == ["work busy=True", "tidy busy=True reason=follow-up", "look busy=False"]
    assert sample(metrics, "dbguardian_backup_last_success_timestamp_seconds", target="app", tier="daily") == 123.0
    assert sample(metrics, "dbguardian_backup_runs_total", target="app", tier="daily", result="success") == 1.0
    assert sample(metrics, "dbguardian_jobs_running", kind="work") == 0.0
    assert list(runner.alerter.firing()) == ["app/looked"]
    assert sample(metrics, "dbguardian_alerts_firing") == 1.0


def test_a_crashing_kind_is_contained_and_an_unknown_metric_is_logged(tmp_path: Path) -> None:
    async def crash(ctx: JobContext, job: JobSpec) -> JobOutcome:
        raise RuntimeError("a bug")

    async def typo(ctx: JobContext, job: JobSpec) -> JobOutcome:
        outcome = JobOutcome()
        outcome.observe("no_such_metric", value=1)
        outcome.observe("health_last_run", value=7)
        return outcome

    runner, metrics = build(tmp_path, {"crash": kind("crash", crash, exclusive=True), "typo": kind("typo", typo)})

    async def both() -> None:
        await runner.run(spec("crash"), "schedule")
        await runner.run(spec("typo"), "schedule")

    with capture_logs() as logs:
        asyncio.run(both())
    events = {entry["event"]: entry for entry in logs}
    assert "a bug" in events["job crashed"]["error"] and events["job crashed"]["job"] == "crash:app"
    assert events["job reported an unknown metric"]["metric"] == "no_such_metric"
    assert sample(metrics, "dbguardian_health_last_run_timestamp_seconds") == 7.0  # the valid one still applied
    assert sample(metrics, "dbguardian_jobs_running", kind="crash") == 0.0


def test_coalescing_kind_skips_while_one_runs(tmp_path: Path) -> None:
    started = 0
    release = asyncio.Event()

    async def slow(ctx: JobContext, job: JobSpec) -> JobOutcome:
        nonlocal started
        started += 1
        await release.wait()
        return JobOutcome()

    runner, _ = build(tmp_path, {"slow": kind("slow", slow, coalesce=True)})

    async def scenario() -> None:
        first = asyncio.create_task(runner.run(spec("slow"), "schedule"))
        await asyncio.sleep(0.01)
        await runner.run(spec("slow"), "schedule")  # returns at once: one is running
        assert started == 1
        release.set()
        await first

    asyncio.run(scenario())
    assert started == 1


def test_exclusive_jobs_of_a_target_never_overlap(tmp_path: Path) -> None:
    inside = 0
    most = 0

    async def exclusive(ctx: JobContext, job: JobSpec) -> JobOutcome:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.02)
        inside -= 1
        return JobOutcome()

    runner, _ = build(tmp_path, {"a": kind("a", exclusive, exclusive=True), "b": kind("b", exclusive, exclusive=True)})

    async def scenario() -> None:
        await asyncio.gather(*(runner.run(spec(name), "schedule") for name in ("a", "b", "a", "b")))

    asyncio.run(scenario())
    assert most == 1


def test_cancelled_job_hands_over_what_it_measured(tmp_path: Path) -> None:
    async def cancelled(ctx: JobContext, job: JobSpec) -> JobOutcome:
        outcome = JobOutcome(result="cancelled")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            outcome.observe("runs", "app", "daily", "cancelled", op="inc")
            raise JobCancelled(outcome) from None
        return outcome

    runner, metrics = build(tmp_path, {"c": kind("c", cancelled, exclusive=True)})

    async def scenario() -> None:
        task = runner.start(spec("c"), "schedule")
        await asyncio.sleep(0.01)
        await runner.shutdown(grace=0.05)
        assert task.cancelled()

    asyncio.run(scenario())
    assert sample(metrics, "dbguardian_backup_runs_total", target="app", tier="daily", result="cancelled") == 1.0


def test_continuous_kind_restarts_with_backoff_and_stops_gracefully(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "BACKOFF_START", 0.01)
    attempts: list[float] = []
    stopped_cleanly = asyncio.Event()

    async def shipper(ctx: JobContext, job: JobSpec) -> JobOutcome:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) <= 3:
            raise RuntimeError(f"failure {len(attempts)}")
        await ctx.stopping.wait()  # the graceful path: finish the current step, then return
        stopped_cleanly.set()
        return JobOutcome()

    continuous = kind("ship", shipper, mode="continuous")
    runner, _ = build(tmp_path, {"ship": continuous})

    async def scenario() -> None:
        runner.configure(runner.policy, {"ship:app": spec("ship")})
        for _ in range(200):
            if len(attempts) >= 4:
                break
            await asyncio.sleep(0.01)
        assert len(attempts) == 4
        await runner.shutdown(grace=5)
        assert stopped_cleanly.is_set()
        assert all(task.done() and not task.cancelled() for task in runner.continuous.values())

    asyncio.run(scenario())
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # 0.01, 0.02, 0.04 s: each restart waits twice as long as the one before
    assert gaps[0] >= 0.01 and gaps[1] >= 0.02 and gaps[2] >= 0.04


def test_continuous_job_removed_by_reload_is_stopped(tmp_path: Path) -> None:
    cancelled = asyncio.Event()

    async def forever(ctx: JobContext, job: JobSpec) -> JobOutcome:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return JobOutcome()

    runner, _ = build(tmp_path, {"ship": kind("ship", forever, mode="continuous")})

    async def scenario() -> None:
        runner.configure(runner.policy, {"ship:app": spec("ship")})
        await asyncio.sleep(0.01)
        runner.configure(runner.policy, {})
        await asyncio.sleep(0.01)
        assert cancelled.is_set() and runner.continuous == {}

    asyncio.run(scenario())


def test_a_run_stays_tracked_through_all_its_follow_ups(tmp_path: Path) -> None:
    """Shutdown waits for what ``running`` holds: a job must stay in it until its last follow-up ends."""
    seen: list[bool] = []

    async def work(ctx: JobContext, job: JobSpec) -> JobOutcome:
        return JobOutcome(follow_ups=["first", "second"])

    async def follow(ctx: JobContext, job: JobSpec) -> JobOutcome:
        seen.append(asyncio.current_task() in runner.running)
        return JobOutcome()

    kinds = {
        "work": kind("work", work, exclusive=True),
        "first": kind("first", follow, mode="follow_up"),
        "second": kind("second", follow, mode="follow_up"),
    }
    runner, _ = build(tmp_path, kinds)
    asyncio.run(runner.run(spec("work"), "schedule"))
    assert seen == [True, True]
