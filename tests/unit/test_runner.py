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
        assert all(job.task.done() and not job.task.cancelled() for job in runner.continuous.values())

    asyncio.run(scenario())
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # 0.01, 0.02, 0.04 s: each restart waits twice as long as the one before
    assert gaps[0] >= 0.01 and gaps[1] >= 0.02 and gaps[2] >= 0.04


def test_reload_stops_a_removed_continuous_job_gracefully_and_cancels_a_stuck_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_module, "CONTINUOUS_STOP_GRACE", 0.05)
    events: list[str] = []

    async def polite(ctx: JobContext, job: JobSpec) -> JobOutcome:
        await ctx.stopping.wait()
        events.append("polite returned")
        return JobOutcome()

    async def stuck(ctx: JobContext, job: JobSpec) -> JobOutcome:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("stuck cancelled")
            raise
        return JobOutcome()

    kinds = {"polite": kind("polite", polite, mode="continuous"), "stuck": kind("stuck", stuck, mode="continuous")}
    runner, _ = build(tmp_path, kinds)

    async def scenario() -> None:
        runner.configure(runner.policy, {"polite:app": spec("polite"), "stuck:app": spec("stuck")})
        await asyncio.sleep(0.01)
        runner.configure(runner.policy, {})
        assert runner.continuous == {}
        await asyncio.sleep(0.2)
        assert not runner.stopping.is_set()  # the daemon goes on; only those jobs stopped

    asyncio.run(scenario())
    assert sorted(events) == ["polite returned", "stuck cancelled"]


def test_reload_restarts_a_continuous_job_whose_spec_changed(tmp_path: Path) -> None:
    seen: list[str] = []

    async def ship(ctx: JobContext, job: JobSpec) -> JobOutcome:
        seen.append(job.timezone)
        await ctx.stopping.wait()
        return JobOutcome()

    runner, _ = build(tmp_path, {"ship": kind("ship", ship, mode="continuous")})

    async def scenario() -> None:
        runner.configure(runner.policy, {"ship:app": spec("ship")})
        await asyncio.sleep(0.01)
        changed = JobSpec("ship", "app", "-", None, None, "Europe/Berlin")
        runner.configure(runner.policy, {"ship:app": changed})
        await asyncio.sleep(0.05)
        assert runner.continuous["ship:app"].spec == changed
        await runner.shutdown(grace=1)

    asyncio.run(scenario())
    assert seen == ["UTC", "Europe/Berlin"]


def test_reload_restarts_a_continuous_job_whose_target_settings_changed(tmp_path: Path) -> None:
    """The job reads the policy once; a reload that changes its target (or the target's storages) restarts it,
    one that changes something else leaves it running."""
    seen: list[str] = []

    async def ship(ctx: JobContext, job: JobSpec) -> JobOutcome:
        seen.append(str(ctx.policy.targets["app"].compression.algorithm))
        await ctx.stopping.wait()
        return JobOutcome()

    runner, _ = build(tmp_path, {"ship": kind("ship", ship, mode="continuous")})
    gzip = make_policy(tmp_path)
    gzip_target = gzip.targets["app"].model_copy(update={"compression": gzip.targets["app"].compression.model_copy(
        update={"algorithm": "gzip"})})  # fmt: skip
    gzip = gzip.model_copy(update={"targets": {"app": gzip_target}})

    async def scenario() -> None:
        runner.configure(runner.policy, {"ship:app": spec("ship")})
        await asyncio.sleep(0.01)
        first = runner.continuous["ship:app"].task
        runner.configure(make_policy(tmp_path, max_concurrent_backups=3), {"ship:app": spec("ship")})
        await asyncio.sleep(0.05)
        assert runner.continuous["ship:app"].task is first  # nothing the job uses changed
        runner.configure(gzip, {"ship:app": spec("ship")})
        await asyncio.sleep(0.05)
        assert runner.continuous["ship:app"].task is not first
        await runner.shutdown(grace=1)

    asyncio.run(scenario())
    assert seen == ["zstd", "gzip"]


def test_alerts_go_out_after_the_lock_and_slot_are_released(tmp_path: Path) -> None:
    """A slow alert channel must not hold up the next backup of any target."""
    busy_when_alerting: list[bool] = []

    async def drill(ctx: JobContext, job: JobSpec) -> JobOutcome:
        return JobOutcome(result="failure", verdicts=[Verdict("app", "drill", False, "bad", "good")])

    runner, _ = build(tmp_path, {"drill": kind("drill", drill, exclusive=True)})
    real_process = runner.alerter.process

    async def watching(*args: Any, **kwargs: Any) -> Any:
        busy_when_alerting.append(runner.target_busy("app") or runner._slots.locked())
        return await real_process(*args, **kwargs)

    runner.alerter.process = watching  # type: ignore[method-assign]
    asyncio.run(runner.run(spec("drill"), "schedule"))
    assert busy_when_alerting == [False]
    assert list(runner.alerter.firing()) == ["app/drill"]


def test_observe_now_is_visible_while_the_job_runs(tmp_path: Path) -> None:
    seen_during: list[float | None] = []

    async def work(ctx: JobContext, job: JobSpec) -> JobOutcome:
        ctx.observe_now("last_attempt", "app", "daily", value=42.0)
        seen_during.append(sample(metrics, "dbguardian_backup_last_attempt_timestamp_seconds", target="app", tier="daily"))
        return JobOutcome()

    runner, metrics = build(tmp_path, {"work": kind("work", work, exclusive=True)})
    asyncio.run(runner.run(spec("work"), "schedule"))
    assert seen_during == [42.0]


def test_follow_ups_of_follow_ups_and_of_unlocked_kinds_run(tmp_path: Path) -> None:
    order: list[str] = []

    def step(name: str, follow_ups: list[str]) -> Callable[[JobContext, JobSpec], Awaitable[JobOutcome]]:
        async def run(ctx: JobContext, job: JobSpec) -> JobOutcome:
            order.append(f"{name} busy={ctx.target_busy('app')}")
            return JobOutcome(follow_ups=list(follow_ups))

        return run

    kinds = {
        "check": kind("check", step("check", ["fix"])),  # neither exclusive nor coalescing
        "fix": kind("fix", step("fix", ["tidy"]), mode="follow_up", exclusive=True),
        "tidy": kind("tidy", step("tidy", []), mode="follow_up", exclusive=True),
    }
    runner, _ = build(tmp_path, kinds)
    asyncio.run(runner.run(spec("check"), "schedule"))
    assert order == ["check busy=False", "fix busy=True", "tidy busy=True"]


def test_job_kind_flags_that_contradict_each_other_are_refused() -> None:
    async def nothing(ctx: JobContext, job: JobSpec) -> JobOutcome:
        return JobOutcome()

    with pytest.raises(ValueError, match="exclusive and coalesce"):
        kind("both", nothing, exclusive=True, coalesce=True)
    with pytest.raises(ValueError, match="continuous kind holds no lock"):
        kind("ship", nothing, mode="continuous", exclusive=True)


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
