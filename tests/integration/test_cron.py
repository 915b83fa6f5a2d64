"""Cron-only installs: `backup --tier T` and `check --notify/--textfile` do what the daemon would, against a real
PostgreSQL, a real HTTP receiver standing in for Slack and the ping service, and promtool."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PolicyFactory, run_cli
from tests.support.pg import backup, listed
from tests.support.receivers import HttpReceiver

SLACK = "/slack/T000/B000/secret-token"
FIRING = "🔴 [dbguardian FIRING] app: last_attempt_failed"
RESOLVED = "✅ [dbguardian RESOLVED] app: last_attempt_failed"


def cron_policy(make_policy: PolicyFactory, database: str, tmp_path: Path, http: HttpReceiver, **target: Any) -> Path:
    """A daily tier keeping one backup; health thresholds every good run passes; Slack and pings to ``http``.
    ``db_failures: 5``: a wrong password fails the backup (last_attempt_failed) long before the database counts
    as unreachable, so one incident is one message."""
    slack_url = tmp_path / "slack.url"
    slack_url.write_text(http.url(SLACK) + "\n")
    pings = {"start": http.url("/ping/start"), "success": http.url("/ping/success"), "fail": http.url("/ping/fail")}
    return make_policy(
        database,
        schedules={"daily": {"cron": "0 2 * * *", "keep": 1}},
        retention={"min_keep": 1},
        pings=pings,
        extra={
            "health": {"min_size": "0", "min_count": 1, "db_failures": 5},
            "alerts": {"retries": 0, "slack": {"webhook_url_file": str(slack_url)}},
        },
        **target,
    )


def pings(http: HttpReceiver) -> tuple[int, int, int]:
    return http.gets("/ping/start"), http.gets("/ping/success"), http.gets("/ping/fail")


def slack_titles(http: HttpReceiver) -> list[str]:
    return [post["blocks"][0]["text"]["text"] for post in http.posts(SLACK)]


def test_a_cron_backup_pings_and_prunes_and_check_exports_metrics(
    database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver
) -> None:
    policy = cron_policy(make_policy, database, tmp_path, http)
    kept = [backup(policy, "--tier", "daily", "--no-prune") for _ in range(2)]
    assert [entry["id"] for entry in listed(policy)] == kept[::-1]  # --no-prune keeps everything
    assert pings(http) == (2, 2, 0)

    result = run_cli(policy, "backup", "app", "--tier", "daily")
    assert result.returncode == 0, result.stderr
    newest = result.stdout.splitlines()[-1]
    assert result.stdout.splitlines()[0].startswith(f"backup {newest} of app (daily): ")
    assert "warning:" not in result.stderr
    assert pings(http) == (3, 3, 0)
    assert [entry["id"] for entry in listed(policy)] == [newest]  # keep: 1
    assert slack_titles(http) == []  # healthy: nothing to say

    manual = backup(policy)  # a human at a shell: no pings, no prune, no alerts
    assert pings(http) == (3, 3, 0)
    assert [entry["id"] for entry in listed(policy)] == [manual, newest]

    textfile = tmp_path / "textfile" / "dbguardian.prom"
    textfile.parent.mkdir()
    result = run_cli(policy, "check", "app", "--notify", "--textfile", str(textfile))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "healthy"
    assert slack_titles(http) == []
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert [path.name for path in textfile.parent.iterdir()] == ["dbguardian.prom"]  # no temp file left
    text = textfile.read_text()
    for line in (
        'dbguardian_health_check_ok{check="stale",target="app"} 1.0',
        'dbguardian_health_check_ok{check="last_attempt_failed",target="app"} 1.0',
        "dbguardian_alerts_firing 0.0",
    ):
        assert line in text.splitlines(), text
    samples = {line.split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert {'dbguardian_backup_last_success_timestamp_seconds{target="app",tier="daily"}',
            'dbguardian_backup_last_success_timestamp_seconds{target="app",tier="manual"}',
            'dbguardian_backup_age_seconds{storage="local",target="app",tier="daily"}',
            "dbguardian_health_last_run_timestamp_seconds"} <= samples  # fmt: skip
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_failing_cron_backup_alerts_once_and_a_good_run_resolves(
    database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver
) -> None:
    good = cron_policy(make_policy, database, tmp_path, http)
    first = backup(good, "--tier", "daily")
    assert pings(http) == (1, 1, 0) and slack_titles(http) == []

    wrong = tmp_path / "wrong.password"
    wrong.write_text("nope\n")
    broken = cron_policy(make_policy, database, tmp_path, http, password_file=str(wrong))
    result = run_cli(broken, "backup", "app", "--tier", "daily")
    assert result.returncode == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "password" in errors[0], result.stderr
    assert pings(http) == (2, 1, 1)
    assert slack_titles(http) == [FIRING]

    again = run_cli(broken, "backup", "app", "--tier", "daily")  # same incident, within renotify: quiet
    assert again.returncode == 1
    assert pings(http) == (3, 1, 2)
    assert slack_titles(http) == [FIRING]

    check = run_cli(broken, "check", "app", "--notify")  # shares the alert state: no second message
    assert check.returncode == 1
    assert "FAIL app          last_attempt_failed" in check.stdout
    assert slack_titles(http) == [FIRING]

    manual = run_cli(broken, "backup", "app")  # manual: no pings, no alerts
    assert manual.returncode == 1
    assert pings(http) == (3, 1, 2) and slack_titles(http) == [FIRING]

    good = cron_policy(make_policy, database, tmp_path, http)
    second = backup(good, "--tier", "daily")
    assert pings(http) == (4, 2, 2)
    assert slack_titles(http) == [FIRING, RESOLVED]
    assert [entry["id"] for entry in listed(good)] == [second]  # retention resumed after the good run
    assert first != second
