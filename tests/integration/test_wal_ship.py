"""The WAL shipper against a real PostgreSQL 15 archiving into its spool, and wal-fetch of what it shipped."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dbguardian.archiving.ship import ShipReport, ship_spool
from dbguardian.catalog.archive import list_wal
from dbguardian.catalog.wal import next_segment_name
from dbguardian.policy import Policy, load_policy
from dbguardian.storage import LocalStorage
from dbguardian.walfile import stop_queue
from tests.conftest import run_cli
from tests.support.walcluster import WalCluster

SEGMENT = 16 * 1024 * 1024


def archive_some(wal_cluster: WalCluster, count: int = 2) -> list[str]:
    """Write a little, switch WAL ``count`` times; the names of the segments now in the spool."""
    last = ""
    for number in range(count):
        wal_cluster.psql(f"INSERT INTO public.settings VALUES ('k{number}', 'v')")
        last = wal_cluster.switch_wal()
    wal_cluster.wait_archived(last)
    return sorted(path.name for path in wal_cluster.spool.iterdir() if len(path.name) == 24)


def ship(policy: Policy) -> ShipReport:
    return asyncio.run(ship_spool(policy, "app"))


def stored_names(root: Path) -> list[str]:
    return [item.name for item in asyncio.run(list_wal(LocalStorage("s", root), "app"))]


def spool_names(wal_cluster: WalCluster) -> list[str]:
    return sorted(path.name for path in wal_cluster.spool.iterdir())


def test_ship_moves_the_spool_to_the_storage_once_and_fetch_gives_the_bytes_back(
    wal_cluster: WalCluster, tmp_path: Path
) -> None:
    segments = archive_some(wal_cluster)
    originals = tmp_path / "originals"
    shutil.copytree(wal_cluster.spool, originals)
    policy_path = wal_cluster.policy(tmp_path)
    policy = load_policy(policy_path)

    report = ship(policy)
    assert set(segments) <= set(report.shipped)
    assert report.waiting == [] and report.failures == {} and report.conflicts == {}
    assert report.written == {"local": len(report.shipped)}
    assert spool_names(wal_cluster) == []
    assert report.spool_files == 0 and report.spool_bytes == 0
    stored = stored_names(tmp_path / "backups")
    assert set(segments) <= set(stored)
    assert all(path.name.endswith(".zst") for path in (tmp_path / "backups" / "app" / "wal" / "00000001").iterdir())

    again = ship(policy)
    assert again.shipped == [] and again.written == {} and again.waiting == []

    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    for name in segments:
        result = run_cli(policy_path, "wal-fetch", "--prefetch", "0", name, str(dest))
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == (originals / name).read_bytes()
        assert dest.stat().st_size == SEGMENT

    missing = run_cli(policy_path, "wal-fetch", "00000002.history", str(dest))
    assert missing.returncode == 1
    # Asked for at the end of every recovery, though timeline 1 has no history file: "not archived", not 126.
    first_history = run_cli(policy_path, "wal-fetch", "00000001.history", str(dest))
    assert first_history.returncode == 1, first_history.stderr
    assert missing.stderr.strip().count("\n") == 0 and "not archived on any storage" in missing.stderr
    assert "Traceback" not in missing.stderr


def queue_fetchers(queue: Path) -> list[int]:
    """Pids of the prefetch queue's fetcher processes serving ``queue`` (its pg_wal in their arguments)."""
    found = subprocess.run(["pgrep", "-f", f"queue-server.*{queue.parent}/"], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def wait_for(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def queued(queue: Path) -> set[str]:
    return {path.name for path in queue.iterdir()} - {".lock", ".socket"}


def test_prefetch_queue_keeps_the_next_segments_ahead_of_recovery(wal_cluster: WalCluster, tmp_path: Path) -> None:
    segments = archive_some(wal_cluster, 3)
    originals = tmp_path / "originals"
    shutil.copytree(wal_cluster.spool, originals)
    policy_path = wal_cluster.policy(tmp_path)
    ship(load_policy(policy_path))
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    dest = pg_wal / "RECOVERYXLOG"
    queue = pg_wal / ".dbguardian-prefetch"

    first, *rest = segments[-3:]
    result = run_cli(policy_path, "wal-fetch", "--prefetch", "4", first, str(dest))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == (originals / first).read_bytes()
    assert queue.stat().st_mode & 0o777 == 0o700
    [fetcher] = queue_fetchers(queue)
    wait_for(lambda: set(rest) <= queued(queue))  # downloaded in the background, after the answer

    # Served from the queue: it works with the storage gone.
    shutil.rmtree(tmp_path / "backups")
    for name in rest:
        result = run_cli(policy_path, "wal-fetch", "--prefetch", "4", name, str(dest))
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == (originals / name).read_bytes()
    assert queue_fetchers(queue) == [fetcher]  # one fetcher answered every call
    # The next segment was never archived: the queue says what the direct download says.
    beyond = next_segment_name(rest[-1])
    after = run_cli(policy_path, "wal-fetch", "--prefetch", "4", beyond, str(dest))
    direct = run_cli(policy_path, "wal-fetch", "--prefetch", "0", beyond, str(dest))
    assert after.returncode == direct.returncode == 1 and after.stderr == direct.stderr

    stop_queue(pg_wal)  # what the PITR restore does once the server is promoted
    wait_for(lambda: not queue_fetchers(queue), 10)
    assert queued(queue) == set() and not (queue / ".socket").exists()


def test_the_queue_answers_not_archived_and_goes_away_when_idle(wal_cluster: WalCluster, tmp_path: Path) -> None:
    segments = archive_some(wal_cluster, 1)
    policy_path = wal_cluster.policy(tmp_path)
    ship(load_policy(policy_path))
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    queue = dest.parent / ".dbguardian-prefetch"
    beyond = next_segment_name(next_segment_name(segments[-1]))
    missing = run_cli(policy_path, "wal-fetch", "--queue-idle", "1", beyond, str(dest))
    assert missing.returncode == 1 and "not archived on any storage" in missing.stderr, missing.stderr
    assert missing.stderr.strip().count("\n") == 0
    history = run_cli(policy_path, "wal-fetch", "--queue-idle", "1", "00000002.history", str(dest))
    assert history.returncode == 1 and "not archived" in history.stderr
    assert not dest.exists()
    assert len(queue_fetchers(queue)) == 1
    wait_for(lambda: not queue_fetchers(queue), 15)  # idle for a second: exits, leaving nothing behind
    assert queued(queue) == set()


def test_a_killed_fetcher_is_replaced_by_the_next_call(wal_cluster: WalCluster, tmp_path: Path) -> None:
    segments = archive_some(wal_cluster, 2)
    originals = tmp_path / "originals"
    shutil.copytree(wal_cluster.spool, originals)
    policy_path = wal_cluster.policy(tmp_path)
    ship(load_policy(policy_path))
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    queue = dest.parent / ".dbguardian-prefetch"
    first, second = segments[-2:]
    assert run_cli(policy_path, "wal-fetch", first, str(dest)).returncode == 0
    [old] = queue_fetchers(queue)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not queue_fetchers(queue), 10)
    assert (queue / ".socket").exists()  # stale: nobody listens
    for item in queue.iterdir():  # what it had prefetched is gone too (as if never downloaded)
        if item.name not in {".lock", ".socket"}:
            item.unlink()
    result = run_cli(policy_path, "wal-fetch", second, str(dest))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == (originals / second).read_bytes()
    [new] = queue_fetchers(queue)
    assert new != old
    stop_queue(dest.parent)
    wait_for(lambda: not queue_fetchers(queue), 10)


def test_a_storage_down_keeps_the_spool_and_ships_everything_once_it_is_back(
    wal_cluster: WalCluster, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file: no storage directory can be made under it")
    storage = {
        "a": {"type": "local", "path": str(tmp_path / "a")},
        "b": {"type": "local", "path": str(blocker / "b")},
    }
    policy = load_policy(wal_cluster.policy(tmp_path, storage=storage))
    segments = archive_some(wal_cluster)

    down = ship(policy)
    assert down.shipped == [] and set(segments) <= set(down.waiting)
    assert set(down.failures) == {"b"}
    assert set(segments) <= set(spool_names(wal_cluster))
    assert set(segments) <= set(stored_names(tmp_path / "a"))

    blocker.unlink()
    blocker.mkdir()
    back = ship(policy)
    assert set(back.shipped) == set(down.waiting) and back.waiting == []
    assert back.written == {"b": len(back.shipped)}  # nothing shipped twice to a
    assert spool_names(wal_cluster) == []
    assert stored_names(tmp_path / "a") == stored_names(blocker / "b")


def test_a_different_object_under_the_key_is_never_overwritten(wal_cluster: WalCluster, tmp_path: Path) -> None:
    segments = archive_some(wal_cluster, 1)
    name = segments[-1]
    policy_path = wal_cluster.policy(tmp_path)
    policy = load_policy(policy_path)
    # Someone else's segment of that name (another cluster writing into the same archive).
    other = tmp_path / "other"
    other.write_bytes(b"\x01" * SEGMENT)
    subprocess.run(["zstd", "-q", "-3", str(other), "-o", str(tmp_path / "other.zst")], check=True)
    key_path = tmp_path / "backups" / "app" / "wal" / "00000001" / f"{name}.zst"
    key_path.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "other.zst", key_path)
    before = key_path.read_bytes()

    report = ship(policy)
    assert name in report.conflicts and name in report.waiting and name not in report.shipped
    assert "different content" in report.conflicts[name]
    assert key_path.read_bytes() == before
    assert (wal_cluster.spool / name).exists()
    assert report.failures == {}  # the storage works; the file conflicts


def test_encrypted_wal_is_fetched_with_the_identity(wal_cluster: WalCluster, tmp_path: Path) -> None:
    keygen = subprocess.run(["age-keygen", "-o", str(tmp_path / "id.txt")], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.strip().split("Public key: ")[1]
    segments = archive_some(wal_cluster, 1)
    name = segments[-1]
    original = (wal_cluster.spool / name).read_bytes()
    policy_path = wal_cluster.policy(tmp_path, encryption={"method": "age", "recipients": [recipient]})
    policy = load_policy(policy_path)
    report = ship(policy)
    assert name in report.shipped
    stored = tmp_path / "backups" / "app" / "wal" / "00000001" / f"{name}.zst.age"
    assert stored.read_bytes().startswith(b"age-encryption.org/v1")

    dest = tmp_path / "RECOVERYXLOG"
    refused = run_cli(policy_path, "wal-fetch", name, str(dest))
    assert refused.returncode == 126 and "--identity" in refused.stderr and not dest.exists()
    result = run_cli(policy_path, "wal-fetch", "--identity", str(tmp_path / "id.txt"), name, str(dest))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == original
    by_env = run_cli(policy_path, "wal-fetch", name, str(dest), DBGUARDIAN_IDENTITY_FILE=str(tmp_path / "id.txt"))
    assert by_env.returncode == 0, by_env.stderr

    # A re-ship of the same file (a crash after the write, before the spool removal) is recognised
    # without the private key: same encoded size.
    (wal_cluster.spool / name).write_bytes(original)
    again = ship(policy)
    assert again.shipped == [name] and again.written == {} and again.conflicts == {}


@pytest.mark.parametrize("prefetch", ["0", "8"])
@pytest.mark.parametrize("corrupt", ["truncated", "renamed"])
def test_fetch_refuses_a_stored_object_that_is_not_the_segment(
    wal_cluster: WalCluster, tmp_path: Path, corrupt: str, prefetch: str
) -> None:
    segments = archive_some(wal_cluster, 2)
    first, second = segments[-2:]
    policy_path = wal_cluster.policy(tmp_path, wal={"spool": str(wal_cluster.spool), "compression": {"algorithm": "none"}})
    ship(load_policy(policy_path))
    folder = tmp_path / "backups" / "app" / "wal" / "00000001"
    if corrupt == "truncated":
        data = (folder / first).read_bytes()
        (folder / first).write_bytes(data[: len(data) // 2])
    else:
        shutil.copy(folder / second, folder / first)
    dest = tmp_path / "RECOVERYXLOG"
    result = run_cli(policy_path, "wal-fetch", "--prefetch", prefetch, first, str(dest))
    assert result.returncode == 126  # recovery must stop, not end as if the archive ended here
    assert ("truncated" if corrupt == "truncated" else "another segment") in result.stderr
    assert not dest.exists()
