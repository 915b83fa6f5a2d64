"""WAL retention through the real CLI on a local storage: only WAL before the oldest kept base backup goes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

from dbguardian.catalog.archive import list_wal
from dbguardian.storage.local import LocalStorage
from tests.conftest import run_cli
from tests.support.backups import put_base_backup, put_wal

OLD, MIDDLE, NEW = "20261101T030000.000000Z-aaaa", "20261108T030000.000000Z-bbbb", "20261115T030000.000000Z-cccc"


def segment(number: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{0:08X}{number:08X}"


def make_policy(tmp_path: Path, keep: int) -> Path:
    policy = {
        "version": 1,
        "state_dir": str(tmp_path / "state"),
        "storage": {"local": {"type": "local", "path": str(tmp_path / "backups")}},
        "targets": {
            "app": {
                "dsn": "postgresql://backup@127.0.0.1:1/app",
                "storage": ["local"],
                "schedules": {"base": {"cron": "0 3 * * 0", "keep": keep, "kind": "physical"}},
                "wal": {"spool": str(tmp_path / "spool")},
            }
        },
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def stored_names(tmp_path: Path) -> list[str]:
    return [item.name for item in asyncio.run(list_wal(LocalStorage("local", tmp_path / "backups"), "app"))]


def test_prune_deletes_wal_only_below_the_oldest_kept_base_backup(tmp_path: Path) -> None:
    storage = LocalStorage("local", tmp_path / "backups")
    wal = [segment(n) for n in range(1, 13)] + [f"{segment(3)}.00000028.backup", "00000002.history"]

    async def populate() -> None:
        await put_base_backup(storage, OLD, "0/3000028", "0/3000100")
        await put_base_backup(storage, MIDDLE, "0/6000028", "0/6000100")
        await put_base_backup(storage, NEW, "0/9000028", "0/A000100")
        await put_wal(storage, *wal)

    asyncio.run(populate())
    policy = make_policy(tmp_path, keep=2)

    dry = run_cli(policy, "prune", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert [d["backup_id"] for d in report["decisions"] if d["delete"]] == [OLD]
    # The oldest kept base backup (MIDDLE) starts in segment 6: segments 1-5 and the old label go.
    assert report["wal"] == [{"storage": "local", "first": segment(1), "last": segment(5), "segments": 5}]
    assert sorted(stored_names(tmp_path)) == sorted(wal)  # a dry run deletes nothing

    plan = run_cli(policy, "plan", "--json")
    assert json.loads(plan.stdout)["wal_retention_would_delete"] == report["wal"]

    done = run_cli(policy, "prune")
    assert done.returncode == 0, done.stderr
    assert f"WAL {segment(1)} .. {segment(5)} (5 segment(s))" in done.stdout
    left = stored_names(tmp_path)
    assert left == sorted([segment(n) for n in range(6, 13)] + ["00000002.history"])

    # Again: nothing more to delete (the chain of every kept backup is whole).
    again = json.loads(run_cli(policy, "prune", "--json").stdout)
    assert again["wal"] == [] and again["wal_deleted"] == 0


def test_without_a_base_backup_no_wal_is_deleted(tmp_path: Path) -> None:
    storage = LocalStorage("local", tmp_path / "backups")
    asyncio.run(put_wal(storage, *(segment(n) for n in range(1, 5))))
    result = run_cli(make_policy(tmp_path, keep=1), "prune", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["wal"] == []
    assert len(stored_names(tmp_path)) == 4
