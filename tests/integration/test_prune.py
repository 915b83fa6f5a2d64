"""Prune against real backups on local storage."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import PolicyFactory, backup_dir, run_cli
from tests.support.pg import backup, listed


def prune_json(policy: Path, *args: str) -> dict[str, Any]:
    result = run_cli(policy, "prune", "app", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_prune_applies_tier_keep_and_is_idempotent(database: str, make_policy: PolicyFactory, tmp_path: Path) -> None:
    policy = make_policy(database, schedules={"daily": {"cron": "0 2 * * *", "keep": 2}}, retention={"min_keep": 1})
    ids = [backup(policy, "--tier", "daily", "--no-prune") for _ in range(4)]
    manual = backup(policy)  # tier "manual" has no keep rule

    dry = prune_json(policy, "--dry-run")
    assert sorted(item["backup_id"] for item in dry["decisions"] if item["delete"]) == sorted(ids[:2])
    assert len(listed(policy)) == 5  # a dry run deletes nothing

    # plan shows the same deletions
    plan = json.loads(run_cli(policy, "plan", "--json").stdout)
    assert sorted(item["id"] for item in plan["retention_would_delete"]) == sorted(ids[:2])

    done = prune_json(policy)
    assert sorted(item["id"] for item in done["deleted"]) == sorted(ids[:2])
    assert [entry["id"] for entry in listed(policy)] == [manual, ids[3], ids[2]]
    for gone in ids[:2]:
        assert not (backup_dir(policy) / "app" / gone).exists()

    again = prune_json(policy)
    assert again["deleted"] == []


def test_prune_pauses_after_a_failed_attempt(database: str, make_policy: PolicyFactory, tmp_path: Path) -> None:
    schedules = {"daily": {"cron": "0 2 * * *", "keep": 1}}
    policy = make_policy(database, schedules=schedules, retention={"min_keep": 1})
    ids = [backup(policy, "--tier", "daily", "--no-prune") for _ in range(3)]
    wrong = tmp_path / "wrong.password"
    wrong.write_text("nope")
    broken = make_policy(database, schedules=schedules, retention={"min_keep": 1}, password_file=str(wrong))
    assert run_cli(broken, "backup", "app", "--tier", "daily").returncode == 1
    result = run_cli(broken, "prune", "app")
    assert result.returncode == 0, result.stderr
    assert "0 backup(s) deleted" in result.stdout
    assert "the latest backup attempt failed" in result.stdout
    assert len(listed(broken)) == 3

    # once a backup succeeds again, retention resumes
    good = make_policy(database, schedules=schedules, retention={"min_keep": 1})
    newest = backup(good, "--tier", "daily", "--no-prune")
    result = run_cli(good, "prune", "app")
    assert result.returncode == 0, result.stderr
    assert [entry["id"] for entry in listed(good)] == [newest]
    assert set(ids).isdisjoint(entry["id"] for entry in listed(good))


def test_prune_removes_idle_leftovers(database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database, extra={"leftover_grace": "1s"})
    kept = backup(policy)
    stray = backup_dir(policy) / "app" / "20200101T000000.000000Z-dead"
    stray.mkdir(parents=True)
    (stray / ".dump.pgc.zst.tmp-1-x").write_bytes(b"partial")
    os.utime(stray / ".dump.pgc.zst.tmp-1-x", (1_600_000_000, 1_600_000_000))  # idle for years
    result = prune_json(policy)
    assert result["leftovers_removed"] == ["app/20200101T000000.000000Z-dead/.dump.pgc.zst.tmp-1-x"]
    assert not stray.exists()
    assert [entry["id"] for entry in listed(policy)] == [kept]
