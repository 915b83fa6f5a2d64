"""Stale backups alert once per incident, through real Slack-like HTTP and SMTP receivers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbguardian.throwaway import free_port
from tests.conftest import PolicyFactory, run_cli
from tests.support.daemon import DaemonProcess
from tests.support.pg import backup
from tests.support.receivers import HttpReceiver, SmtpReceiver


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def alert_policy(make_policy: PolicyFactory, database: str, tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver,
                 port: int, **health: Any) -> Path:  # fmt: skip
    slack_url = tmp_path / "slack.url"
    slack_url.write_text(http.url("/slack/T000/B000/secret-token") + "\n")
    pings = {"success": http.url("/ping/app"), "fail": http.url("/ping/app/fail")}
    return make_policy(
        database,
        schedules={},
        pings=pings,
        extra={
            "catch_up": False,
            "metrics": {"listen": f"127.0.0.1:{port}"},
            "health": {"every": "1s", "max_age": "4s", "min_size": "0", "min_count": 1, "renotify": "8s", **health},
            "alerts": {
                "retries": 0,
                "slack": {"webhook_url_file": str(slack_url)},
                "email": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "tls": "none",
                    "sender": "dbguardian@test.example",
                    "to": ["dba@test.example", "oncall@test.example"],
                    "timeout": "3s",
                },
            },
        },
    )


def slack_titles(http: HttpReceiver) -> list[str]:
    return [post["blocks"][0]["text"]["text"] for post in http.posts("/slack/T000/B000/secret-token")]


def test_stale_backup_alerts_once_reminds_survives_restart_and_resolves(
    database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver,
    daemons: list[DaemonProcess],
) -> None:  # fmt: skip
    port = free_port()
    policy = alert_policy(make_policy, database, tmp_path, http, smtp, port)
    backup(policy)
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()
    firing = "🔴 [dbguardian FIRING] app: stale"
    daemon.wait_for("the stale alert on Slack", lambda: firing in slack_titles(http), timeout=30)
    daemon.wait_for("the stale alert by email", lambda: len(smtp.messages) >= 1, timeout=15)
    assert slack_titles(http) == [firing]
    assert smtp.subjects() == [firing]
    mail = smtp.messages[0]
    assert mail["X-Rcpt-To"] == "dba@test.example, oncall@test.example"
    assert {part.get_content_type() for part in mail.walk()} >= {"text/plain", "text/html"}
    slack = http.posts("/slack/T000/B000/secret-token")[0]
    fields = " ".join(field["text"] for field in slack["blocks"][1]["fields"])
    assert "newest backup on local is" in fields and "younger than 4s" in fields
    assert "Runbook" in slack["blocks"][2]["elements"][0]["text"]
    assert daemon.metric("dbguardian_health_check_ok", target="app", check="stale") == 0

    reminder = "🔴 [dbguardian STILL FIRING] app: stale"
    daemon.wait_for("a reminder after renotify", lambda: reminder in slack_titles(http), timeout=20)
    assert slack_titles(http) == [firing, reminder]
    daemon.wait_for("the reminder by email", lambda: len(smtp.messages) == 2, timeout=10)

    # A restart neither resends the alert nor forgets it is firing.
    assert daemon.stop() == 0
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()
    time.sleep(3)
    assert slack_titles(http) == [firing, reminder]
    assert len(smtp.messages) == 2

    # A fresh backup resolves it: one resolved message per channel.
    backup(policy)
    resolved = "✅ [dbguardian RESOLVED] app: stale"
    daemon.wait_for("resolved on Slack", lambda: resolved in slack_titles(http), timeout=20)
    daemon.wait_for("resolved by email", lambda: resolved in smtp.subjects(), timeout=10)
    time.sleep(2)
    assert slack_titles(http) == [firing, reminder, resolved]
    assert smtp.subjects() == [firing, reminder, resolved]
    assert daemon.stop() == 0
    # Secrets (the webhook URL's token) never reach the logs.
    assert "secret-token" not in daemon.log_path.read_text()


def test_smtp_down_delays_email_but_loses_nothing(
    database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver,
    daemons: list[DaemonProcess],
) -> None:  # fmt: skip
    port = free_port()
    policy = alert_policy(make_policy, database, tmp_path, http, smtp, port, renotify="1h")
    backup(policy)
    smtp.stop()
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()
    firing = "🔴 [dbguardian FIRING] app: stale"
    daemon.wait_for("Slack gets the alert although email is down", lambda: firing in slack_titles(http), timeout=30)
    daemon.wait_for("a failed email delivery", lambda: daemon.metric("dbguardian_alert_deliveries_total",
                    channel="email", result="failure"), timeout=15)  # fmt: skip
    assert smtp.messages == []
    smtp.start()
    daemon.wait_for("the delayed email", lambda: smtp.subjects() == [firing], timeout=60)
    assert daemon.metric("dbguardian_alert_deliveries_total", channel="email", result="success") == 1
    assert slack_titles(http) == [firing]  # Slack got it once, not again
    assert daemon.stop() == 0


def test_alert_test_command_reports_each_channel(
    database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    policy = alert_policy(make_policy, database, tmp_path, http, smtp, free_port())
    result = run_cli(policy, "alert", "test")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["email    ok", "slack    ok"]
    assert smtp.subjects() == ["🧪 [dbguardian TEST] (test): alert test"]
    smtp.stop()
    result = run_cli(policy, "alert", "test")
    assert result.returncode == 1
    assert "slack    ok" in result.stdout and "email    failed: email via 127.0.0.1:" in result.stdout


def test_check_command_exit_codes_and_pings(
    database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver, smtp: SmtpReceiver
) -> None:
    policy = alert_policy(make_policy, database, tmp_path, http, smtp, free_port(), max_age="1h")
    result = run_cli(policy, "check", "app")
    assert result.returncode == 1
    assert "FAIL app          stale" in result.stdout and "no valid backup on local" in result.stdout
    backup(policy)
    result = run_cli(policy, "check", "app", "--json")
    assert result.returncode == 0, result.stdout
    import json

    report = json.loads(result.stdout)
    assert report["healthy"] is True and {c["check"] for c in report["checks"]} >= {"stale", "integrity"}
    # corrupt the stored object: the integrity check names it
    from tests.conftest import backup_dir

    dump = next(backup_dir(policy).rglob("dump.pgc.zst"))
    dump.write_bytes(dump.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "state" / "health" / "app.json").unlink()  # forget the last re-read
    result = run_cli(policy, "check", "app")
    assert result.returncode == 1
    assert "FAIL app          integrity" in result.stdout and "dump.pgc.zst" in result.stdout
