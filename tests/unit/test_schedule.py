"""Policy → job table and catch-up decisions, without a clock."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbguardian.jobs.registry import job_specs
from dbguardian.policy import parse_policy
from dbguardian.schedule import JobSpec, catch_up_plan, next_runs
from tests.conftest import cli_env


def policy_with(schedules_by_target: dict[str, dict[str, Any]], timezone: str = "UTC") -> Any:
    return parse_policy(
        {
            "version": 1,
            "state_dir": "/var/lib/dbguardian",
            "timezone": timezone,
            "storage": {"local": {"type": "local", "path": "/var/lib/dbguardian/backups"}},
            "targets": {
                name: {"dsn": f"postgresql://backup@db/{name}", "storage": ["local"], "schedules": schedules}
                for name, schedules in schedules_by_target.items()
            },
        }
    )


def test_one_backup_job_per_target_and_tier() -> None:
    policy = policy_with(
        {
            "app": {"daily": {"cron": "0 2 * * *", "keep": 7}, "weekly": {"cron": "0 3 * * 0"}},
            "crm": {"fast": {"every": "10s", "keep": 3}},
            "idle": {},
        },
        timezone="Europe/Berlin",
    )
    specs = job_specs(policy)
    assert [(s.id, s.cron, s.every) for s in specs if s.kind == "health"] == [
        ("health:app", "0 */6 * * *", None),
        ("health:crm", "0 */6 * * *", None),
        ("health:idle", "0 */6 * * *", None),
    ]
    assert [(s.id, s.cron, s.every, s.timezone) for s in specs if s.kind == "backup"] == [
        ("backup:app:daily", "0 2 * * *", None, "Europe/Berlin"),
        ("backup:app:weekly", "0 3 * * 0", None, "Europe/Berlin"),
        ("backup:crm:fast", None, timedelta(seconds=10), "Europe/Berlin"),
    ]


NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DAILY = JobSpec("backup", "app", "daily", "0 2 * * *", None, "UTC")
WEEKLY = JobSpec("backup", "app", "weekly", "0 3 * * 0", None, "UTC")
FAST = JobSpec("backup", "app", "fast", None, timedelta(minutes=10), "UTC")
BERLIN = JobSpec("backup", "app", "daily", "0 2 * * *", None, "Europe/Berlin")


@pytest.mark.parametrize(
    ("spec", "newest", "expected_reason"),
    [
        (DAILY, None, "no valid backup of this tier yet"),
        (DAILY, NOW - timedelta(hours=9), None),  # 03:00 today, after today's 02:00
        (DAILY, NOW - timedelta(hours=11), "missed the run due at 2026-11-22T02:00:00+00:00"),  # 01:00 today
        (DAILY, NOW - timedelta(days=3), "missed the run due at 2026-11-20T02:00:00+00:00"),
        (WEEKLY, datetime(2026, 11, 22, 3, 0, 1, tzinfo=UTC), None),  # this Sunday's run happened
        (WEEKLY, datetime(2026, 11, 22, 2, 59, tzinfo=UTC), "missed the run due at 2026-11-22T03:00:00+00:00"),
        (WEEKLY, datetime(2026, 11, 16, 3, 0, tzinfo=UTC), "missed the run due at 2026-11-22T03:00:00+00:00"),
        (FAST, NOW - timedelta(minutes=5), None),
        (FAST, NOW - timedelta(minutes=11), "newest backup is older than every 600s"),
        # 02:00 Berlin is 01:00 UTC in winter: a backup at 01:30 UTC today is after it.
        (BERLIN, datetime(2026, 11, 22, 1, 30, tzinfo=UTC), None),
        (BERLIN, datetime(2026, 11, 22, 0, 30, tzinfo=UTC), "missed the run due at 2026-11-22T02:00:00+01:00"),
    ],
)
def test_catch_up_decisions(spec: JobSpec, newest: datetime | None, expected_reason: str | None) -> None:
    newest_backup = {} if newest is None else {(spec.target, spec.tier): newest}
    plan = catch_up_plan([spec], newest_backup, NOW)
    assert [item.reason for item in plan] == ([expected_reason] if expected_reason else [])


def test_catch_up_is_per_tier() -> None:
    newest = {("app", "daily"): NOW - timedelta(hours=1), ("app", "weekly"): NOW - timedelta(days=30)}
    assert [item.spec.id for item in catch_up_plan([DAILY, WEEKLY], newest, NOW)] == ["backup:app:weekly"]


def test_next_runs_of_intervals_count_from_the_anchor() -> None:
    anchor = NOW
    runs = next_runs(FAST, NOW + timedelta(minutes=25), 3, anchor=anchor)
    assert runs == [NOW + timedelta(minutes=30), NOW + timedelta(minutes=40), NOW + timedelta(minutes=50)]


@pytest.mark.slow  # runs the CLI as a subprocess, once per case
@pytest.mark.parametrize(
    ("timezone", "cron", "at", "expected"),
    [
        ("UTC", "0 2 * * *", "2026-11-22T12:00:00Z",
         [("2026-11-23T02:00:00+00:00", "2026-11-23T02:00:00Z"), ("2026-11-24T02:00:00+00:00", "2026-11-24T02:00:00Z")]),
        ("Europe/Berlin", "30 2 * * *", "2026-03-28T12:00:00Z",
         [("2026-03-29T03:00:00+02:00", "2026-03-29T01:00:00Z"), ("2026-03-30T02:30:00+02:00", "2026-03-30T00:30:00Z")]),
        ("Europe/Berlin", "30 2 * * *", "2026-10-24T12:00:00Z",
         [("2026-10-25T02:30:00+02:00", "2026-10-25T00:30:00Z"), ("2026-10-26T02:30:00+01:00", "2026-10-26T01:30:00Z")]),
        ("America/New_York", "0 0 * * 1", "2026-11-01T03:00:00Z",
         [("2026-11-02T00:00:00-05:00", "2026-11-02T05:00:00Z"), ("2026-11-09T00:00:00-05:00", "2026-11-09T05:00:00Z")]),
        ("Asia/Kolkata", "0 2 1 * *", "2026-11-22T12:00:00Z",
         [("2026-12-01T02:00:00+05:30", "2026-11-30T20:30:00Z"), ("2027-01-01T02:00:00+05:30", "2026-12-31T20:30:00Z")]),
    ],
)  # fmt: skip
def test_plan_command_output(tmp_path: Path, timezone: str, cron: str, at: str, expected: list[tuple[str, str]]) -> None:
    import json

    policy = {
        "version": 1,
        "state_dir": str(tmp_path / "state"),
        "timezone": timezone,
        "storage": {"local": {"type": "local", "path": str(tmp_path / "backups")}},
        "targets": {
            "app": {"dsn": "postgresql://backup@db/app", "storage": ["local"], "schedules": {"daily": {"cron": cron}}}
        },
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    result = subprocess.run(
        [sys.executable, "-m", "dbguardian", "--policy", str(path), "plan", "--json", "--count", "2", "--at", at],
        capture_output=True, text=True, env=cli_env(), check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    [job] = [job for job in plan["jobs"] if job["kind"] == "backup"]
    assert job["job"] == "backup:app:daily"
    assert [(run["local"], run["utc"]) for run in job["next_runs"]] == expected
    assert job["catch_up"] == "no valid backup of this tier yet"
    text = subprocess.run(
        [sys.executable, "-m", "dbguardian", "--policy", str(path), "plan", "--count", "2", "--at", at],
        capture_output=True, text=True, env=cli_env(), check=False, timeout=60,
    ).stdout  # fmt: skip
    assert f"    next {expected[0][0]}  [{expected[0][1]}]" in text
    assert "    catch-up now: no valid backup of this tier yet" in text
