"""`wal setup` and `wal status` against a real PostgreSQL 15 archiving into a spool."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import run_cli
from tests.support.walcluster import WalCluster


def test_wal_setup_accepts_the_archiving_cluster_and_names_what_a_wrong_spool_lacks(
    wal_cluster: WalCluster, tmp_path: Path
) -> None:
    policy = wal_cluster.policy(tmp_path)
    result = run_cli(policy, "wal", "setup", "app")
    assert result.returncode == 0, result.stderr
    assert "archive_library = 'basic_archive'" in result.stdout
    assert f"basic_archive.archive_directory = '{wal_cluster.spool}'" in result.stdout
    assert "ok: the server archives WAL" in result.stdout

    other = wal_cluster.policy(tmp_path, wal={"spool": str(tmp_path / "other-spool")})
    result = run_cli(other, "wal", "setup", "app")
    assert result.returncode == 1
    assert f"missing: basic_archive.archive_directory = '{tmp_path / 'other-spool'}'" in result.stderr
    assert f"now '{wal_cluster.spool}'" in result.stderr
    assert "pg_reload_conf" in result.stderr


def test_wal_setup_refuses_a_target_without_wal(wal_cluster: WalCluster, tmp_path: Path) -> None:
    policy = wal_cluster.policy(tmp_path, wal=None, schedules={"daily": {"cron": "0 2 * * *", "keep": 7}})
    result = run_cli(policy, "wal", "setup", "app")
    assert result.returncode == 2
    assert "has no 'wal:' block" in result.stderr


def test_wal_status_shows_the_archiver_and_a_spool_nobody_ships(wal_cluster: WalCluster, tmp_path: Path) -> None:
    segment = wal_cluster.switch_wal()
    wal_cluster.wait_archived(segment)
    policy = wal_cluster.policy(tmp_path)
    result = run_cli(policy, "wal", "status", "--json")
    assert result.returncode == 1, result.stderr  # nothing on the storage: wal_stale fails
    status = json.loads(result.stdout)["targets"][0]
    assert status["archiver"]["last_archived_wal"] >= segment
    assert status["archiver"]["archive_timeout_seconds"] == 60
    assert status["spool"]["files"] >= 1 and status["spool"]["bytes"] >= 16 * 1024 * 1024
    assert status["storages"]["local"]["newest_segment"] is None
    checks = {check["check"]: check["ok"] for check in status["checks"]}
    assert checks == {"wal_stale": False, "wal_backlog": True, "archiver_failing": True, "wal_gap": True,
                      "base_stale": False, "chain_broken": True}  # fmt: skip

    text = run_cli(policy, "wal", "status")
    assert text.returncode == 1
    assert "FAIL wal_stale" in text.stdout and "local: no WAL archived" in text.stdout


def test_wal_push_without_spool_takes_it_from_the_policy(wal_cluster: WalCluster, tmp_path: Path) -> None:
    spool = tmp_path / "push-spool"
    policy = wal_cluster.policy(tmp_path, wal={"spool": str(spool)})
    source = tmp_path / "000000010000000000000042"
    source.write_bytes(b"w" * 8192)
    result = run_cli(policy, "wal-push", str(source))
    assert result.returncode == 0, result.stderr
    assert (spool / source.name).read_bytes() == source.read_bytes()
    data = yaml.safe_load(policy.read_text())
    assert data["targets"]["app"]["wal"]["spool"] == str(spool)
