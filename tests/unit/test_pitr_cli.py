"""`restore --pitr` and `restore-point` argument checks (no server needed: they fail before connecting)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support.cli import invoke_cli as run_cli


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "state_dir": str(tmp_path / "state"),
                "storage": {"local": {"type": "local", "path": str(tmp_path / "backups")}},
                "targets": {"app": {"dsn": "postgresql://backup@127.0.0.1:1/app", "storage": ["local"]}},
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to-name", "x"], "--to-name only go with --pitr"),
        (["--start", "--port", "7000"], "--start, --port only go with --pitr"),
        (["--pitr"], "needs --pgdata"),
        (["--pitr", "--pgdata", "/tmp/x", "--to-name", "a", "--to-time", "2026-01-01T00:00:00Z"], "give one of"),
        (["--pitr", "--pgdata", "/tmp/x", "--to-time", "2026-01-01T00:00:00"], "no time zone"),
        (["--pitr", "--pgdata", "/tmp/x", "--to-lsn", "12"], "is not an LSN"),
        (["--pitr", "--pgdata", "/tmp/x", "--to-name", "n" * 64], "1 to 63 bytes"),
    ],
)
def test_restore_pitr_usage_errors(policy: Path, args: list[str], message: str) -> None:
    result = run_cli(policy, "restore", "app", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_restore_point_name_checked_before_connecting(policy: Path) -> None:
    result = run_cli(policy, "restore-point", "app", "n" * 64)
    assert result.returncode == 2 and "1 to 63 bytes" in result.stderr, result.stderr
    result = run_cli(policy, "restore-point", "app", "ok", "--wait")
    assert result.returncode == 2 and "no wal: block" in result.stderr, result.stderr
