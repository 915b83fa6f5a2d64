"""Two ``dbguardian run`` daemons on one policy and one PostgreSQL: each job runs once, on the target's
leader; the other takes over when the leader is killed; alerts go out once.

The two policies differ only in what is per host (``state_dir``, the metrics port); the storage is one
directory, standing in for the bucket both hosts would share.
"""

from __future__ import annotations

import copy
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from dbguardian.throwaway import free_port
from tests.conftest import PolicyFactory, Postgres, backup_dir, run_cli
from tests.integration.test_alerts_scenario import slack_titles
from tests.integration.test_failures import TableLock, wait_for_blocked_dump
from tests.support.daemon import DaemonProcess
from tests.support.pg import backup, listed
from tests.support.receivers import HttpReceiver

JOB = "backup:app:fast"


def two_policies(make_policy: PolicyFactory, database: str, tmp_path: Path, **target: Any) -> list[tuple[Path, int]]:
    data = yaml.safe_load(make_policy(database, **target).read_text())
    policies = []
    for host in ("host-a", "host-b"):
        port = free_port()
        mine = copy.deepcopy(data)
        mine["state_dir"] = str(tmp_path / host / "state")
        mine["metrics"] = {"listen": f"127.0.0.1:{port}"}
        mine["coordination"] = {"check_every": "1s"}
        (tmp_path / host).mkdir()
        path = tmp_path / host / "policy.yaml"
        path.write_text(yaml.safe_dump(mine))
        policies.append((path, port))
    return policies


def leader_of(daemons: list[DaemonProcess], job: str) -> list[float | None]:
    return [daemon.metric("dbguardian_job_leader", job_id=job) for daemon in daemons]


def starts(policy: Path, tier: str) -> list[datetime]:
    return sorted(datetime.fromisoformat(entry["started_at"]) for entry in listed(policy) if entry["tier"] == tier)


def test_each_scheduled_run_happens_once_and_the_survivor_takes_over(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    (policy_a, port_a), (policy_b, port_b) = two_policies(
        make_policy, database, tmp_path, schedules={"fast": {"every": "10s", "keep": 100}}
    )
    first = DaemonProcess(policy_a, port_a)
    daemons.append(first)
    first.wait_ready()
    second = DaemonProcess(policy_b, port_b)
    daemons.append(second)
    second.wait_ready()
    pair = [first, second]
    # Until both daemons have set the gauge, one of them reads None: not yet.
    first.wait_for(
        "one leader for the backup job",
        lambda: sorted(v if v is not None else -1 for v in leader_of(pair, JOB)) == [0.0, 1.0],
    )

    time.sleep(32)  # three or four fire times of each daemon's own 10 s schedule
    runs = starts(policy_a, "fast")
    assert len(runs) >= 3, runs
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(runs)]
    assert all(7 <= gap <= 14 for gap in gaps), gaps  # once per period: none twice (both daemons), none lost
    leader, follower = (first, second) if first.metric("dbguardian_job_leader", job_id=JOB) == 1 else (second, first)
    assert not follower.events("backup failed") and not leader.events("backup failed")

    # Kill -9 the leader in the middle of a backup: its pg_dump waits behind a table lock.
    lock = TableLock(pg, database, "shop.orders")
    try:
        wait_for_blocked_dump(pg, database)
        before = starts(policy_a, "fast")
        killed_at = time.monotonic()
        leader.kill()
    finally:
        lock.release()
    follower.wait_for("the survivor leads", lambda: follower.metric("dbguardian_job_leader", job_id=JOB) == 1, timeout=10)
    follower.wait_for("a backup by the survivor", lambda: len(starts(policy_a, "fast")) > len(before), timeout=25)
    assert time.monotonic() - killed_at < 10 + 1 + 10  # within one period (+ check_every, + the run itself)
    assert follower.events("took over a target from another daemon")

    # Nothing of the killed run is listed; everything listed is whole.
    entries = listed(policy_a)
    folders = {path.name for path in (backup_dir(policy_a) / "app").iterdir() if path.is_dir() and path.name != "wal"}
    assert {entry["id"] for entry in entries} <= folders
    assert run_cli(policy_b, "verify", "app", "--all").returncode == 0
    after = starts(policy_a, "fast")
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(after)]
    assert min(gaps) > 0.5, after  # never the same run twice
    assert follower.stop() == 0


def test_a_health_incident_is_one_message_and_survives_a_take_over(
    database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver, daemons: list[DaemonProcess]
) -> None:
    slack_url = tmp_path / "slack.url"
    slack_url.write_text(http.url("/slack/T000/B000/secret-token") + "\n")
    extra = {
        "catch_up": False,
        "health": {"every": "1s", "max_age": "4s", "min_size": "0", "min_count": 1, "renotify": "1h"},
        "alerts": {"retries": 0, "slack": {"webhook_url_file": str(slack_url)}},
    }
    base = make_policy(database, schedules={}, extra=extra)
    backup(base)  # a backup that goes stale after 4 s
    (policy_a, port_a), (policy_b, port_b) = two_policies(make_policy, database, tmp_path, schedules={})
    for path in (policy_a, policy_b):  # make_policy rewrote the base file: keep the alerting settings
        data = yaml.safe_load(path.read_text())
        data.update(extra)
        path.write_text(yaml.safe_dump(data))
    pair = [DaemonProcess(policy_a, port_a), DaemonProcess(policy_b, port_b)]
    daemons.extend(pair)
    firing = "🔴 [dbguardian FIRING] app: stale"
    pair[0].wait_for("the stale alert", lambda: firing in slack_titles(http), timeout=30)
    time.sleep(5)  # five more health runs on the leader; the follower runs none
    assert slack_titles(http) == [firing]
    job = "health:app"
    values = leader_of(pair, job)
    assert sorted(v or 0 for v in values) == [0, 1], values

    # Kill the leader: the survivor adopts the firing alert (no second "firing"), then resolves it once.
    leader, survivor = (pair[0], pair[1]) if values[0] == 1 else (pair[1], pair[0])
    leader.kill()
    survivor.wait_for("the survivor leads", lambda: survivor.metric("dbguardian_job_leader", job_id=job) == 1, timeout=10)
    survivor.wait_for("health runs on the survivor", lambda: survivor.events("health check failing"), timeout=10)
    time.sleep(3)
    assert slack_titles(http) == [firing]
    backup(policy_a)
    resolved = "✅ [dbguardian RESOLVED] app: stale"
    survivor.wait_for("the resolved message", lambda: resolved in slack_titles(http), timeout=15)
    time.sleep(2)
    assert slack_titles(http) == [firing, resolved]
    assert survivor.stop() == 0
