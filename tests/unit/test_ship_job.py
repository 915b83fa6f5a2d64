"""The wal_ship job: its decisions with ``now`` passed in, and the loop itself over local storages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dbguardian.alerts.dispatch import Alerter
from dbguardian.archiving.ship import ShipReport
from dbguardian.health import Verdict
from dbguardian.jobs import wal_ship
from dbguardian.jobs.outcome import JobContext, Observation
from dbguardian.jobs.registry import KINDS, job_specs
from dbguardian.jobs.wal_ship import SPOOL, Streak, backoff, next_wait, record, ship_verdict, should_report
from dbguardian.metrics import Metrics
from dbguardian.runner import Runner
from tests.unit.test_ship import fill_spool, make_policy, stored

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_backoff_doubles_from_one_second_to_a_minute() -> None:
    assert [backoff(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_a_streak_grows_with_failures_and_a_success_resets_it() -> None:
    first = record(Streak(), "down", NOW, 100.0)
    assert (first.failures, first.since, first.error, first.retry_at) == (1, NOW, "down", 101.0)
    second = record(first, "still down", NOW + timedelta(seconds=1), 101.0)
    assert (second.failures, second.since, second.error, second.retry_at) == (2, NOW, "still down", 103.0)
    assert record(second, None, NOW, 103.0) == Streak()


def test_the_check_fails_after_a_few_attempts_or_at_once_for_a_conflict() -> None:
    two = {"offsite": Streak(2, NOW - timedelta(seconds=3), "timeout")}
    assert ship_verdict("app", two, {}, NOW).ok
    three = {"offsite": Streak(3, NOW - timedelta(seconds=7), "timeout"), "local": Streak()}
    verdict = ship_verdict("app", three, {}, NOW)
    assert (verdict.target, verdict.check, verdict.ok) == ("app", "wal_ship", False)
    assert verdict.observed == "shipping to offsite failing for 7s (3 attempts): timeout"
    whole = ship_verdict("app", {SPOOL: Streak(5, NOW - timedelta(minutes=2), "cannot read the spool")}, {}, NOW)
    assert not whole.ok and whole.observed.startswith("WAL shipping as a whole failing for 2m")
    conflict = ship_verdict("app", {}, {"000000010000000000000003": "local:app/wal/…: it decodes to different content"}, NOW)
    assert not conflict.ok and "000000010000000000000003 conflicts" in conflict.observed
    assert ship_verdict("app", {}, {}, NOW).observed == "every storage takes WAL"


def test_when_a_verdict_goes_to_the_alerter() -> None:
    ok = Verdict("app", "wal_ship", True, "", "")
    bad = Verdict("app", "wal_ship", False, "", "")
    assert should_report(ok, None, NOW)  # the first one: clears a firing state of an earlier daemon
    assert not should_report(ok, (True, NOW - timedelta(hours=5)), NOW)
    assert should_report(bad, (True, NOW), NOW)
    assert not should_report(bad, (False, NOW - timedelta(seconds=59)), NOW)
    assert should_report(bad, (False, NOW - timedelta(seconds=60)), NOW)
    assert should_report(ok, (False, NOW), NOW)


def test_next_pass_at_once_after_progress_else_a_poll_or_the_first_retry() -> None:
    assert next_wait(ShipReport(shipped=["x"]), {}, 10.0) == 0.0
    assert next_wait(ShipReport(written={"a": 1}), {}, 10.0) == 0.0
    assert next_wait(ShipReport(shipped=["x"], failures={"b": "down"}), {}, 10.0) == wal_ship.POLL
    assert next_wait(ShipReport(), {}, 10.0) == wal_ship.POLL
    assert next_wait(None, {"b": Streak(3, NOW, "down", 10.25)}, 10.0) == 0.25
    assert next_wait(None, {"b": Streak(3, NOW, "down", 9.0)}, 10.0) == 0.0


def test_one_shipper_per_target_with_wal(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, {"a": tmp_path / "a"})
    assert KINDS["wal_ship"].mode == "continuous"
    ship_specs = [spec for spec in job_specs(policy) if spec.kind == "wal_ship"]
    assert [(spec.id, spec.describe_trigger()) for spec in ship_specs] == [("wal_ship:app", "continuous")]


class Recorder:
    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.verdicts: list[Verdict] = []

    def publish(self, observation: Observation) -> None:
        self.observations.append(observation)

    async def report(self, verdicts: list[Verdict]) -> None:
        self.verdicts.extend(verdicts)

    def total(self, metric: str, *labels: str) -> float:
        return sum(o.value for o in self.observations if o.metric == metric and o.labels == labels)


async def until(predicate: object, timeout: float = 10) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_loop_ships_alerts_on_a_failing_storage_and_resolves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wal_ship, "BACKOFF_START", 0.05)
    monkeypatch.setattr(wal_ship, "POLL", 0.05)
    blocker = tmp_path / "blocker"
    blocker.write_text("b cannot be created under a regular file")
    policy = make_policy(tmp_path, {"a": tmp_path / "a", "b": blocker / "b"})
    spool = tmp_path / "spool"
    names = fill_spool(spool, 3)
    recorder = Recorder()
    stopping = asyncio.Event()
    ctx = JobContext(policy, lambda: NOW, [], lambda target: False, stopping, recorder.publish, "continuous",
                     recorder.report)  # fmt: skip
    spec = next(spec for spec in job_specs(policy) if spec.kind == "wal_ship")

    async def scenario() -> None:
        job = asyncio.create_task(wal_ship.run(ctx, spec))
        await until(lambda: any(not v.ok for v in recorder.verdicts))
        assert recorder.verdicts[0].ok  # the first pass: b has failed only once
        failing = next(v for v in recorder.verdicts if not v.ok)
        assert "shipping to b failing" in failing.observed and "(3 attempts)" in failing.observed
        assert stored(tmp_path / "a") == [name + ".zst" for name in names]
        assert sorted(path.name for path in spool.iterdir() if not path.name.startswith(".")) == names
        assert recorder.total("wal_ship_failures", "app", "b") >= 3
        assert recorder.total("wal_segments_shipped", "app", "a") == 3  # written once, not once per pass

        blocker.unlink()
        blocker.mkdir()
        await until(lambda: recorder.verdicts[-1].ok)
        await until(lambda: not any(path.name in names for path in spool.iterdir()))
        later = fill_spool(spool, 2, first=10)
        await until(lambda: stored(blocker / "b") == [name + ".zst" for name in [*names, *later]])
        stopping.set()
        await asyncio.wait_for(job, timeout=5)

    asyncio.run(scenario())
    assert recorder.total("wal_segments_shipped", "app", "a") == 5
    assert recorder.total("wal_segments_shipped", "app", "b") == 5
    spool_gauge = [o for o in recorder.observations if o.metric == "wal_spool_segments"]
    assert spool_gauge[-1].value == 0
    assert any(o.metric == "wal_ship_duration" and o.op == "observe" for o in recorder.observations)
    assert any(o.metric == "wal_last_archived" and o.labels == ("app", "b") for o in recorder.observations)


def test_the_runner_hands_reported_verdicts_to_the_alerter(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, {"a": tmp_path / "a"})
    policy.state_dir.mkdir(parents=True)
    alerter = Alerter(policy)
    runner = Runner(policy, Metrics(), alerter, lambda: NOW)

    async def scenario() -> None:
        ctx = runner.context("continuous", job="wal_ship:app")
        await ctx.report([Verdict("app", "wal_ship", False, "shipping to a failing", "every storage takes WAL")])

    asyncio.run(scenario())
    assert list(alerter.firing()) == ["app/wal_ship"]
