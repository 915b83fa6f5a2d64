"""The health check's integrity re-read stays within the policy's budget (``health.integrity``):
a backup larger than ``max_bytes`` is never downloaded by it (the verify job checks it), and a backup
is re-read at most once per ``every``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from structlog.testing import capture_logs

from dbguardian.catalog import keys
from dbguardian.health import TargetFacts
from dbguardian.jobs.health import gather
from dbguardian.policy import Policy, parse_policy
from dbguardian.storage.memory import MemoryStorage
from tests.support.backups import put_backup
from tests.support.storage_spy import SpyStorage

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def policy(tmp_path: Path, max_bytes: int) -> Policy:
    return parse_policy({
        "version": 1,
        "state_dir": str(tmp_path / "state"),
        "storage": {"local": {"type": "local", "path": str(tmp_path / "l")},
                    "offsite": {"type": "local", "path": str(tmp_path / "o")}},
        "health": {"integrity": {"every": "24h", "max_bytes": max_bytes}},
        "targets": {"app": {"dsn": "postgresql://backup@127.0.0.1:1/app?connect_timeout=1",
                            "storage": ["local", "offsite"], "schedules": {"daily": {"cron": "0 2 * * *", "keep": 7}}}},
    })  # fmt: skip


async def put_sized_backup(storage: MemoryStorage, hours_ago: float, size: int, entropy: str) -> str:
    backup_id = keys.new_backup_id(NOW - timedelta(hours=hours_ago), entropy)
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    await put_backup(storage, backup_id, data, size_bytes=size)
    return backup_id


def run(config: Policy, storages: list[SpyStorage], now: datetime) -> TargetFacts:
    return asyncio.run(gather(config, "app", now, [], storages=storages))


def test_a_backup_bigger_than_max_bytes_is_not_downloaded(tmp_path: Path) -> None:
    local, offsite = MemoryStorage("local"), MemoryStorage("offsite")
    big = asyncio.run(put_sized_backup(local, 2, 5000, "0001"))
    small = asyncio.run(put_sized_backup(offsite, 3, 800, "0002"))
    asyncio.run(put_sized_backup(offsite, 30, 900, "0003"))  # older: never the one re-read
    config = policy(tmp_path, max_bytes=1000)
    spies = [SpyStorage(local), SpyStorage(offsite)]

    with capture_logs() as logs:
        facts = run(config, spies, NOW)
    assert spies[0].data_bytes_read() == 0
    assert spies[1].data_bytes_read() == 800
    assert facts.integrity_checked == [f"offsite:{small}"] and facts.integrity_errors == {}
    skipped = [entry for entry in logs if entry["event"].startswith("integrity re-read skipped")]
    assert [(e["storage"], e["id"], e["size"], e["max_bytes"]) for e in skipped] == [("local", big, "4.9 KiB", "1000 B")]

    # Within `every`, nothing is read again and the skip is not logged again.
    spies = [SpyStorage(local), SpyStorage(offsite)]
    with capture_logs() as logs:
        run(config, spies, NOW + timedelta(hours=23))
    assert [s.data_bytes_read() for s in spies] == [0, 0]
    assert not [entry for entry in logs if entry["event"].startswith("integrity re-read skipped")]

    # After `every`, the small one is read again; the big one still never is.
    spies = [SpyStorage(local), SpyStorage(offsite)]
    run(config, spies, NOW + timedelta(hours=25))
    assert [s.data_bytes_read() for s in spies] == [0, 800]


def test_a_corrupt_object_within_budget_is_reported(tmp_path: Path) -> None:
    local = MemoryStorage("local")
    backup_id = asyncio.run(put_sized_backup(local, 1, 600, "0004"))
    key = keys.dump_key("app", backup_id, ".zst")
    local.objects[key] = (b"y" * 600, local.objects[key][1])
    facts = run(policy(tmp_path, max_bytes=1000), [SpyStorage(local), SpyStorage(MemoryStorage("offsite"))], NOW)
    assert "sha256" in facts.integrity_errors["local"]
    # Bigger budget than the default 1 GB: still read.
    assert run(policy(tmp_path / "b", max_bytes=10 * 1024**3), [SpyStorage(local)], NOW).integrity_errors
