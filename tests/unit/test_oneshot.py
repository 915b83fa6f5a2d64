"""The one-shot pieces without a database: the textfile (format, mode, atomic replace) and the renotify rule."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from dbguardian.alerts.dispatch import renotify_for
from dbguardian.jobs.outcome import Observation
from dbguardian.oneshot import render_metrics, write_textfile
from dbguardian.policy import HEALTH_DEFAULTS, Policy

OBSERVATIONS = [
    Observation("health_ok", ("app", "stale"), 1),
    Observation("health_ok", ("app", "last_attempt_failed"), 0),
    Observation("backup_age", ("app", "daily", "local"), 3600),
    Observation("last_success", ("app", "daily"), 1_700_000_000),
    Observation("health_last_run", (), 1_700_003_600),
]


def test_render_applies_observations_as_the_daemon_does() -> None:
    lines = render_metrics(OBSERVATIONS, alerts_firing=1).decode().splitlines()
    assert 'dbguardian_health_check_ok{check="last_attempt_failed",target="app"} 0.0' in lines
    assert 'dbguardian_backup_age_seconds{storage="local",target="app",tier="daily"} 3600.0' in lines
    assert "dbguardian_alerts_firing 1.0" in lines
    assert "dbguardian_alerts_firing 0.0" in render_metrics([]).decode().splitlines()  # as a fresh daemon's


def test_render_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    text = render_metrics(OBSERVATIONS, alerts_firing=0)
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_textfile_is_replaced_whole_and_readable_by_the_collector(tmp_path: Path) -> None:
    path = tmp_path / "dbguardian.prom"
    path.write_text("old\n")
    old_umask = os.umask(0o077)  # as under the systemd unit's UMask=0077
    try:
        write_textfile(path, b"new 1\n")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new 1\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["dbguardian.prom"]


def test_a_failed_textfile_write_leaves_what_was_there_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "dbguardian.prom"
    path.mkdir()  # the rename onto it fails after the temp file was written
    (path / "keep").write_text("x")
    with pytest.raises(IsADirectoryError):
        write_textfile(path, b"new 1\n")
    assert [p.name for p in tmp_path.iterdir()] == ["dbguardian.prom"]
    assert [p.name for p in path.iterdir()] == ["keep"]


def test_renotify_is_the_targets_health_renotify(tmp_path: Path) -> None:
    policy = Policy.model_validate({
        "version": 1,
        "state_dir": str(tmp_path),
        "storage": {"local": {"type": "local", "path": str(tmp_path / "b")}},
        "health": {"renotify": "2h"},
        "targets": {"app": {"dsn": "postgresql://u@h/app", "storage": ["local"], "health": {"renotify": "30m"}},
                    "other": {"dsn": "postgresql://u@h/other", "storage": ["local"]}},
    })  # fmt: skip
    renotify = functools.partial(renotify_for, policy)
    assert renotify("app") == timedelta(minutes=30)
    assert renotify("other") == timedelta(hours=2)
    assert renotify("gone") == HEALTH_DEFAULTS.renotify


def test_alerting_waits_for_another_process_holding_the_alert_state(tmp_path: Path) -> None:
    """The daemon and cron's one-shot commands on one state_dir take turns on the alert state (an flock
    on alerts.lock): while another process holds it, process() waits; then it sees that process's state."""
    import asyncio
    import fcntl
    import json
    import threading
    from datetime import UTC, datetime, timedelta

    from dbguardian.alerts.dispatch import Alerter
    from dbguardian.health import Verdict
    from dbguardian.policy import parse_policy

    policy = parse_policy({
        "version": 1, "state_dir": str(tmp_path / "state"),
        "storage": {"local": {"type": "local", "path": str(tmp_path / "b")}},
        "targets": {"app": {"dsn": "postgresql://backup@127.0.0.1:1/app", "storage": ["local"]}},
    })  # fmt: skip
    now = datetime(2026, 12, 4, tzinfo=UTC)
    policy.state_dir.mkdir(parents=True)
    produced: list[str] = []

    def other_process_alerting() -> None:
        produced.extend(n.kind for n in asyncio.run(
            Alerter(policy).process([Verdict("app", "stale", False, "old", "young")], now, lambda t: timedelta(hours=1))
        ))  # fmt: skip

    with open(policy.state_dir / "alerts.lock", "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        worker = threading.Thread(target=other_process_alerting)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and produced == []  # waiting for the lock
        # Meanwhile "this process" announces the incident and records it, as the holder would.
        since = now.isoformat()
        (policy.state_dir / "alerts.json").write_text(json.dumps(
            {"alerts": {"app/stale": {"firing": True, "since": since, "last_sent": since}}, "outbox": []}
        ))  # fmt: skip
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert produced == []  # it saw the incident already announced: no second "firing"
