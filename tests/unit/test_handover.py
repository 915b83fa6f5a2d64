"""A target's safety state handed from one daemon to the next through its storage (local storage here)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dbguardian.alerts.dispatch import Alerter
from dbguardian.catalog import keys
from dbguardian.handover import Handover
from dbguardian.health import Verdict
from dbguardian.jobs.health import health_state_path
from dbguardian.policy import Policy, parse_policy
from dbguardian.state import last_attempt, last_attempt_failed, read_json, record_attempt, write_json

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def host_policy(tmp_path: Path, host: str) -> Policy:
    """Two hosts: their own state_dir, one shared storage."""
    return parse_policy(
        {
            "version": 1,
            "state_dir": str(tmp_path / host),
            "storage": {"shared": {"type": "local", "path": str(tmp_path / "bucket")}},
            "targets": {
                "app": {"dsn": "postgresql://backup@127.0.0.1:1/app", "storage": ["shared"]},
                "other": {"dsn": "postgresql://backup@127.0.0.1:1/other", "storage": ["shared"]},
            },
        }
    )


def renotify(target: str) -> timedelta:
    return timedelta(hours=1)


def test_the_next_leader_takes_the_attempt_the_alerts_and_the_counters(tmp_path: Path) -> None:
    a, b = host_policy(tmp_path, "a"), host_policy(tmp_path, "b")
    alerter_a, alerter_b = Alerter(a), Alerter(b)

    async def scenario() -> None:
        record_attempt(a.state_dir, "app", "daily", NOW, "failure", "connection refused")
        write_json(health_state_path(a, "app"), {"db_failures": 3})
        await alerter_a.process([Verdict("app", "stale", False, "old", "young"), Verdict("other", "stale", False, "o", "y")],
                                NOW, renotify)  # fmt: skip
        await Handover(a, alerter_a).publish("app", NOW)
        # b had its own view of app (an alert a resolved since) and of other (not handed over here).
        earlier = [Verdict("app", "too_small", False, "1 B", "more"), Verdict("other", "count", False, "0", "1")]
        await alerter_b.process(earlier, NOW - timedelta(hours=2), renotify)
        assert await Handover(b, alerter_b).adopt("app") is True
        assert await Handover(b, alerter_b).adopt("app") is False  # nothing newer the second time

    asyncio.run(scenario())
    assert last_attempt_failed(b.state_dir, "app")  # retention stays paused on the new leader
    assert last_attempt(b.state_dir, "app") == last_attempt(a.state_dir, "app")
    assert read_json(health_state_path(b, "app")) == {"db_failures": 3}
    assert sorted(alerter_b.firing()) == ["app/stale", "other/count"]  # app's from a; other's untouched
    assert alerter_b.firing()["app/stale"].since == NOW


def test_a_firing_alert_is_not_sent_again_after_adoption_and_resolves_once(tmp_path: Path) -> None:
    a, b = host_policy(tmp_path, "a"), host_policy(tmp_path, "b")
    alerter_a, alerter_b = Alerter(a), Alerter(b)
    failing = Verdict("app", "stale", False, "old", "young")

    async def scenario() -> tuple[list[str], list[str]]:
        assert [n.kind for n in await alerter_a.process([failing], NOW, renotify)] == ["firing"]
        await Handover(a, alerter_a).publish("app", NOW)
        await Handover(b, alerter_b).adopt("app")
        again = await alerter_b.process([failing], NOW + timedelta(minutes=1), renotify)
        healthy = Verdict("app", "stale", True, "young", "young")
        resolved = await alerter_b.process([healthy], NOW + timedelta(minutes=2), renotify)
        return [n.kind for n in again], [n.kind for n in resolved]

    assert asyncio.run(scenario()) == ([], ["resolved"])


def test_publish_writes_only_changes_and_stays_later_than_what_it_replaced(tmp_path: Path) -> None:
    a, b = host_policy(tmp_path, "a"), host_policy(tmp_path, "b")
    stored = tmp_path / "bucket" / keys.state_key("app")

    async def scenario() -> None:
        record_attempt(a.state_dir, "app", "daily", NOW, "success")
        await Handover(a, Alerter(a)).publish("app", NOW)
        first = stored.stat().st_mtime_ns
        await Handover(a, Alerter(a)).publish("app", NOW + timedelta(minutes=5))  # unchanged: not written
        assert stored.stat().st_mtime_ns == first
        await Handover(b, Alerter(b)).adopt("app")
        # b's clock is an hour behind; what it writes must still count as newer than what it adopted.
        record_attempt(b.state_dir, "app", "daily", NOW, "failure", "boom")
        await Handover(b, Alerter(b)).publish("app", NOW - timedelta(hours=1))
        assert await Handover(a, Alerter(a)).adopt("app") is True

    asyncio.run(scenario())
    document = json.loads(stored.read_text())
    assert datetime.fromisoformat(document["written_at"]) > NOW
    assert last_attempt_failed(a.state_dir, "app")
    assert stored.stat().st_mode & 0o077 == 0  # private like every backup object
