"""The WAL checks job: one per target with wal:, every rpo_target / 2 within [1m, 15m]."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from dbguardian.jobs.registry import job_specs
from dbguardian.jobs.wal_check import interval
from dbguardian.policy import parse_policy


def test_interval_is_half_the_rpo_target_within_bounds() -> None:
    assert interval(timedelta(minutes=5)) == timedelta(seconds=150)
    assert interval(timedelta(seconds=30)) == timedelta(minutes=1)
    assert interval(timedelta(hours=2)) == timedelta(minutes=15)


def test_one_wal_check_per_target_with_wal(tmp_path: Path) -> None:
    target = {"dsn": "postgresql://backup@127.0.0.1:5432/app", "storage": ["local"]}
    policy = parse_policy({
        "version": 1, "state_dir": str(tmp_path / "state"),
        "storage": {"local": {"type": "local", "path": str(tmp_path / "backups")}},
        "targets": {"app": {**target, "wal": {"spool": str(tmp_path / "spool"), "rpo_target": "10m"}}, "other": target},
    })  # fmt: skip
    checks = [(spec.id, spec.describe_trigger()) for spec in job_specs(policy) if spec.kind == "wal_check"]
    assert checks == [("wal_check:app", "every 300s")]
