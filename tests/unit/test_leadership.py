"""Leadership decisions (pure) and the runner's use of them, with a scripted leadership (no server)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from dbguardian.jobs.outcome import CatchUpPlan, JobContext, JobOutcome
from dbguardian.leadership import Role, acts, lock_key
from dbguardian.policy import Policy
from dbguardian.schedule import CatchUp, JobSpec
from tests.unit.test_runner import build, kind, make_policy, sample, spec


@pytest.mark.parametrize(
    ("role", "known", "expected"),
    [
        ("leader", None, True),
        ("leader", "follower", True),
        ("leader", "leader", True),
        ("follower", None, False),
        ("follower", "leader", False),
        ("follower", "follower", False),
        ("unknown", None, True),  # never reached the server: a duplicate check beats silence
        ("unknown", "leader", True),  # the leader keeps its target while the server is down
        ("unknown", "follower", False),  # the leader is probably alive
    ],
)
def test_who_acts(role: Role, known: Role | None, expected: bool) -> None:
    assert acts(role, known) is expected


def test_lock_keys_are_stable_distinct_and_int4() -> None:
    keys = {lock_key(group, target) for group in ("dbguardian", "other") for target in ("app", "billing", "ap")}
    assert len(keys) == 6
    assert lock_key("dbguardian", "app") == lock_key("dbguardian", "app")
    assert all(0 <= part < 2**31 for key in keys for part in key)


class Scripted:
    """A leadership whose answers the test sets."""

    def __init__(self, leads: bool) -> None:
        self.leads = leads
        self.asked: list[str] = []

    async def claim(self, target: str) -> bool:
        self.asked.append(target)
        return self.leads

    async def claim_many(self, targets: list[str]) -> dict[str, bool]:
        return dict.fromkeys(targets, self.leads)

    def configure(self, policy: Policy) -> None:
        return None

    async def release(self, target: str) -> None:
        return None

    async def prune(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_a_follower_skips_runs_and_a_leader_runs_them(tmp_path: Path) -> None:
    ran: list[str] = []

    async def job(ctx: JobContext, job_spec: JobSpec) -> JobOutcome:
        ran.append(job_spec.id)
        return JobOutcome(follow_ups=["after"])

    async def after(ctx: JobContext, job_spec: JobSpec) -> JobOutcome:
        ran.append(job_spec.id)
        return JobOutcome()

    runner, metrics = build(tmp_path, {"job": kind("job", job), "after": kind("after", after, mode="follow_up")})
    leadership = Scripted(leads=False)
    runner.leadership = leadership
    runner.configure(runner.policy, {"job:app": spec("job")})

    async def scenario() -> None:
        await runner.run(spec("job"), "schedule")
        assert ran == []
        assert sample(metrics, "dbguardian_job_leader", job_id="job:app") == 0
        leadership.leads = True
        await runner.run(spec("job"), "schedule")

    asyncio.run(scenario())
    assert ran == ["job:app", "after:app"]  # the follow-up runs under its parent, without asking again
    assert leadership.asked == ["app", "app"]
    assert sample(metrics, "dbguardian_job_leader", job_id="job:app") == 1


def test_taking_over_catches_up_missed_cron_runs_only(tmp_path: Path) -> None:
    cron = JobSpec("job", "app", "daily", "0 2 * * *", None, "UTC")
    interval = JobSpec("job", "app", "fast", None, timedelta(seconds=10), "UTC")
    ran: list[str] = []

    async def job(ctx: JobContext, job_spec: JobSpec) -> JobOutcome:
        ran.append(job_spec.id)
        return JobOutcome()

    async def missed(ctx: JobContext, specs: list[JobSpec]) -> CatchUpPlan:
        return CatchUpPlan(JobOutcome(), [CatchUp(item, "missed", None) for item in specs])

    runner, _ = build(tmp_path, {"job": kind("job", job, catch_up=missed)},
                      make_policy(tmp_path, coordination={"check_every": "1s"}))  # fmt: skip
    leadership = Scripted(leads=False)
    runner.leadership = leadership
    runner.configure(runner.policy, {cron.id: cron, interval.id: interval})

    async def scenario() -> None:
        watch = asyncio.create_task(runner.watch_leadership())
        await asyncio.sleep(0.05)
        assert ran == []  # a follower: nothing
        leadership.leads = True
        await asyncio.sleep(1.3)
        runner.stopping.set()
        await watch
        await asyncio.gather(*runner.running)

    asyncio.run(scenario())
    assert ran == [cron.id]  # the interval job is left to its next fire, at most one period away


def test_a_continuous_job_runs_only_while_leading(tmp_path: Path) -> None:
    """The WAL shipper's mode: a follower waits; a leader runs it; losing the lead asks it to stop."""
    runs: list[str] = []

    async def shipper(ctx: JobContext, job_spec: JobSpec) -> JobOutcome:
        runs.append("started")
        await ctx.stopping.wait()
        runs.append("stopped")
        return JobOutcome()

    runner, metrics = build(tmp_path, {"ship": kind("ship", shipper, mode="continuous")},
                            make_policy(tmp_path, coordination={"check_every": "1s"}))  # fmt: skip
    leadership = Scripted(leads=False)
    runner.leadership = leadership

    async def scenario() -> None:
        runner.configure(runner.policy, {"ship:app": spec("ship")})
        await asyncio.sleep(0.3)
        assert runs == []  # a follower waits
        leadership.leads = True
        await asyncio.sleep(1.3)  # the next check finds it leading
        assert runs == ["started"]
        assert sample(metrics, "dbguardian_job_leader", job_id="ship:app") == 1
        leadership.leads = False  # another daemon took the lock (ours broke)
        await asyncio.sleep(1.3)
        assert runs == ["started", "stopped"]
        assert sample(metrics, "dbguardian_job_leader", job_id="ship:app") == 0
        await runner.shutdown(grace=5)

    asyncio.run(scenario())
    assert runs == ["started", "stopped"]  # not restarted while following
