"""``dbguardian run`` as a real subprocess against the test PostgreSQL."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbguardian.throwaway import free_port
from tests.conftest import PolicyFactory, Postgres, backup_dir
from tests.integration.test_failures import TableLock, files_under, wait_for_blocked_dump
from tests.support.daemon import DaemonProcess, NotifyListener
from tests.support.pg import listed
from tests.support.receivers import HttpReceiver


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(Path("/tmp") / f"dbgn-{tmp_path.name[-20:]}.sock")
    yield listener
    listener.close()
    listener.path.unlink(missing_ok=True)


def daemon_policy(make_policy: PolicyFactory, database: str, port: int, schedules: dict[str, Any], **extra: Any) -> Path:
    return make_policy(database, schedules=schedules, extra={"metrics": {"listen": f"127.0.0.1:{port}"}, **extra})


def scheduled_jobs(daemon: DaemonProcess) -> set[str]:
    """The job ids in the daemon's table, as /metrics shows them (next-run gauge)."""
    samples = daemon.metrics()
    return {dict(labels)["job_id"] for (name, labels) in samples if name == "dbguardian_job_next_run_timestamp_seconds"}


def tiers(policy: Path) -> list[str]:
    return [entry["tier"] for entry in listed(policy)]


def test_backups_appear_on_schedule_and_metrics_show_them(
    database: str, make_policy: PolicyFactory, port: int, notify: NotifyListener, daemons: list[DaemonProcess]
) -> None:
    policy = daemon_policy(make_policy, database, port, {"fast": {"every": "2s", "keep": 3}}, catch_up=False)
    daemon = DaemonProcess(policy, port, notify, watchdog_usec=400_000)
    daemons.append(daemon)
    daemon.wait_ready()
    assert "READY=1" in notify.lines()
    started = time.monotonic()
    daemon.wait_for("three scheduled backups", lambda: len(listed(policy)) >= 3, timeout=40)
    assert time.monotonic() - started < 20  # every 2s, a backup takes well under a second here

    entries = listed(policy)
    newest = entries[0]
    assert {entry["tier"] for entry in entries} == {"fast"}
    stored = daemon.wait_for(
        "metrics of the newest backup",
        lambda: daemon.metric("dbguardian_backup_last_stored_bytes", target="app", tier="fast"),
    )
    assert stored > 0
    successes = daemon.metric("dbguardian_backup_runs_total", target="app", tier="fast", result="success")
    assert successes is not None and successes >= 3
    assert daemon.metric("dbguardian_backup_runs_total", target="app", tier="fast", result="failure") is None
    last = daemon.metric("dbguardian_backup_last_success_timestamp_seconds", target="app", tier="fast")
    assert last is not None and abs(last - _timestamp(newest["started_at"])) < 30
    next_run = daemon.metric("dbguardian_job_next_run_timestamp_seconds", job_id="backup:app:fast", kind="backup",
                             target="app", tier="fast")  # fmt: skip
    assert next_run is not None and next_run > time.time() - 5
    assert daemon.metric("dbguardian_build_info", version=_version(), python=_python()) == 1
    count = daemon.metric("dbguardian_backup_duration_seconds_count", target="app", tier="fast")
    assert count is not None and count >= 3
    assert daemon.get("/healthz") == (200, "ok\n")

    # The watchdog is fed from the event loop at half of WATCHDOG_USEC.
    daemon.wait_for("watchdog pings", lambda: notify.lines().count("WATCHDOG=1") >= 4, timeout=10)
    assert any(line.startswith("STATUS=3 jobs; next: backup:app:fast at ") for line in notify.lines())

    assert daemon.stop() == 0
    assert "STOPPING=1" in notify.lines()


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _version() -> str:
    from dbguardian import __version__

    return __version__


def _python() -> str:
    import platform

    return platform.python_version()


def test_missed_cron_run_is_caught_up_at_start(
    database: str, make_policy: PolicyFactory, port: int, daemons: list[DaemonProcess]
) -> None:
    # daily at 02:00 UTC: the newest daily backup (none yet) is older than the last fire time.
    policy = daemon_policy(make_policy, database, port, {"daily": {"cron": "0 2 * * *", "keep": 7}})
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_for("the caught-up backup", lambda: tiers(policy) == ["daily"], timeout=30)
    assert [entry["job"] for entry in daemon.events("catching up a missed run")] == ["backup:app:daily"]
    assert daemon.metric("dbguardian_missed_runs_total", target="app", tier="daily") == 1
    assert daemon.stop() == 0

    # Restarted with a daily backup newer than the last 02:00: nothing to catch up.
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()
    checked = daemon.wait_for("the catch-up decision", lambda: daemon.events("catch-up checked"))
    assert checked[0]["kind"] == "backup" and checked[0]["enabled"] is True and checked[0]["missed"] == []
    assert daemon.events("catching up a missed run") == []
    assert tiers(policy) == ["daily"]
    assert daemon.metric("dbguardian_backup_last_success_timestamp_seconds", target="app", tier="daily") == pytest.approx(
        _timestamp(listed(policy)[0]["started_at"]), abs=0.001
    )
    assert daemon.stop() == 0


def test_catch_up_can_be_turned_off(
    database: str, make_policy: PolicyFactory, port: int, daemons: list[DaemonProcess]
) -> None:
    policy = daemon_policy(make_policy, database, port, {"daily": {"cron": "0 2 * * *"}}, catch_up=False)
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()
    checked = daemon.wait_for("the catch-up decision", lambda: daemon.events("catch-up checked"))
    # the daily run at 02:00 was missed (there is no backup at all), and catch-up is off: nothing runs
    assert checked[0]["enabled"] is False and checked[0]["missed"] == []
    assert daemon.events("catching up a missed run") == []
    assert daemon.stop() == 0
    assert listed(policy) == []


def test_sighup_swaps_table_when_valid_and_keeps_it_when_not(
    database: str, make_policy: PolicyFactory, port: int, notify: NotifyListener, daemons: list[DaemonProcess]
) -> None:
    policy = daemon_policy(make_policy, database, port, {"nightly": {"cron": "0 3 * * *"}}, catch_up=False)
    daemon = DaemonProcess(policy, port, notify)
    daemons.append(daemon)
    daemon.wait_ready()

    assert scheduled_jobs(daemon) == {"backup:app:nightly", "health:app", "drill:app"}

    data = yaml.safe_load(policy.read_text())
    data["targets"]["app"]["schedules"] = {"fast": {"every": "1s", "keep": 2}}
    policy.write_text(yaml.safe_dump(data))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for("new job table", lambda: scheduled_jobs(daemon) == {"backup:app:fast", "health:app", "drill:app"})
    assert daemon.metric("dbguardian_policy_reloads_total", result="success") == 1
    assert "RELOADING=1" in notify.lines()
    daemon.wait_for("a backup from the new job", lambda: "fast" in tiers(policy))

    data["targets"]["app"]["schedules"] = {"fast": {"every": "1s", "keep": 2}, "broken": {"cron": "0 2 * *"}}
    data["bogus_key"] = True
    policy.write_text(yaml.safe_dump(data))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for("reload rejected", lambda: daemon.metric("dbguardian_policy_reloads_total", result="failure") == 1)
    problems = sorted(entry["problem"] for entry in daemon.events("policy reload rejected; keeping the running policy"))
    assert problems == [
        "bogus_key: unknown key",
        "targets.app.schedules.broken.cron: expected 5 fields (minute hour day month weekday), got 4",
    ]
    assert daemon.metric("dbguardian_policy_last_reload_successful") == 0
    assert scheduled_jobs(daemon) == {"backup:app:fast", "health:app", "drill:app"}

    def successes() -> float:
        return daemon.metric("dbguardian_backup_runs_total", target="app", tier="fast", result="success") or 0

    before = successes()
    daemon.wait_for("the old table still running", lambda: successes() > before)
    assert daemon.stop() == 0


def test_sigterm_during_long_backup_exits_0_and_leaves_nothing(
    pg: Postgres, database: str, make_policy: PolicyFactory, port: int, daemons: list[DaemonProcess]
) -> None:
    policy = daemon_policy(make_policy, database, port, {"daily": {"cron": "0 2 * * *"}}, shutdown_grace="2s")
    lock = TableLock(pg, database, "shop.orders")
    try:
        daemon = DaemonProcess(policy, port)
        daemons.append(daemon)
        wait_for_blocked_dump(pg, database)  # the catch-up backup is stuck behind the lock
        started = time.monotonic()
        assert daemon.stop(timeout=30) == 0
        elapsed = time.monotonic() - started
        assert 1.5 < elapsed < 10  # waited for the grace period, then cancelled
        assert files_under(backup_dir(policy)) == []
        assert listed(policy) == []
        assert daemon.events("grace period over: cancelling running jobs")
        assert daemon.events("backup cancelled")
    finally:
        lock.release()


def test_second_sigterm_cancels_at_once(
    pg: Postgres, database: str, make_policy: PolicyFactory, port: int, daemons: list[DaemonProcess]
) -> None:
    policy = daemon_policy(make_policy, database, port, {"daily": {"cron": "0 2 * * *"}}, shutdown_grace="60s")
    lock = TableLock(pg, database, "shop.orders")
    try:
        daemon = DaemonProcess(policy, port)
        daemons.append(daemon)
        wait_for_blocked_dump(pg, database)
        started = time.monotonic()
        daemon.process.terminate()
        time.sleep(0.5)
        daemon.process.terminate()
        assert daemon.stop(timeout=30) == 0
        assert time.monotonic() - started < 10
        assert files_under(backup_dir(policy)) == []
    finally:
        lock.release()


@pytest.mark.parametrize("problem", ["bad policy", "state dir", "port taken"])
def test_startup_refusals(database: str, make_policy: PolicyFactory, port: int, tmp_path: Path, problem: str) -> None:
    import socket
    import subprocess
    import sys

    from tests.conftest import cli_env

    extra: dict[str, Any] = {}
    holder = None
    if problem == "bad policy":
        extra["catch_up"] = "sometimes"
    elif problem == "state dir":
        blocker = tmp_path / "file-not-dir"
        blocker.write_text("")
        extra["state_dir"] = str(blocker / "state")
    else:
        holder = socket.socket()
        holder.bind(("127.0.0.1", port))
        holder.listen()
    policy = daemon_policy(make_policy, database, port, {"daily": {"cron": "0 2 * * *"}}, **extra)
    try:
        result = subprocess.run([sys.executable, "-m", "dbguardian", "--policy", str(policy), "run"],
                                capture_output=True, text=True, timeout=30, env=cli_env(), check=False)  # fmt: skip
    finally:
        if holder is not None:
            holder.close()
    expected = {
        "bad policy": (2, "catch_up: Input should be a valid boolean"),
        "state dir": (1, f"error: state_dir {tmp_path / 'file-not-dir' / 'state'} is not writable"),
        "port taken": (1, f"error: cannot listen on 127.0.0.1:{port}: "),
    }[problem]
    assert result.returncode == expected[0], result.stderr
    assert expected[1] in result.stderr
    assert "Traceback" not in result.stderr


def test_reload_is_all_or_nothing_when_a_secret_file_is_unreadable(
    database: str, make_policy: PolicyFactory, port: int, tmp_path: Path, http: HttpReceiver, daemons: list[DaemonProcess]
) -> None:
    """The new policy parses, but its Slack URL file cannot be read: nothing of it may take effect."""
    slack_url = tmp_path / "slack.url"
    slack_url.write_text(http.url("/slack/T000/B000/reload-token") + "\n")
    alerts = {"retries": 0, "slack": {"webhook_url_file": str(slack_url)}}
    policy = daemon_policy(make_policy, database, port, {"nightly": {"cron": "0 3 * * *"}}, catch_up=False, alerts=alerts)
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()

    assert scheduled_jobs(daemon) == {"backup:app:nightly", "health:app", "drill:app"}
    data = yaml.safe_load(policy.read_text())
    data["targets"]["app"]["schedules"] = {"hourly": {"cron": "0 * * * *"}}
    data["alerts"]["slack"]["webhook_url_file"] = str(tmp_path / "missing" / "slack.url")
    policy.write_text(yaml.safe_dump(data))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for("reload rejected", lambda: daemon.metric("dbguardian_policy_reloads_total", result="failure") == 1)
    assert daemon.metric("dbguardian_policy_reloads_total", result="success") is None
    assert daemon.metric("dbguardian_policy_last_reload_successful") == 0
    problems = [entry["problem"] for entry in daemon.events("policy reload rejected; keeping the running policy")]
    assert len(problems) == 1 and "slack.url" in problems[0]
    assert scheduled_jobs(daemon) == {"backup:app:nightly", "health:app", "drill:app"}  # the old table, untouched
    # The policy_reload alert goes out through the channel of the policy still running.
    posts = daemon.wait_for("the policy_reload alert", lambda: http.posts("/slack/T000/B000/reload-token"))
    assert "policy_reload" in json.dumps(posts[0])
    assert daemon.stop() == 0
