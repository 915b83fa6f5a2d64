"""The daemon's WAL shipper: a real ``dbguardian run`` draining a real PostgreSQL 15 spool, killed mid-ship."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import yaml

from dbguardian.archiving.fetch import check_wal_file
from dbguardian.throwaway import free_port
from tests.integration.test_wal_ship import archive_some
from tests.support.daemon import DaemonProcess
from tests.support.walcluster import WalCluster


def daemon_policy(wal_cluster: WalCluster, tmp_path: Path, port: int, **wal: object) -> Path:
    path = wal_cluster.policy(tmp_path, wal={"spool": str(wal_cluster.spool), "rpo_target": "5m", **wal})
    data = yaml.safe_load(path.read_text())
    data["metrics"] = {"listen": f"127.0.0.1:{port}"}
    data["catch_up"] = False
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stored(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "backups" / "app" / "wal" / "00000001"
    if not folder.is_dir():
        return {}
    return {path.name.removesuffix(".zst"): path for path in folder.iterdir() if path.name.endswith(".zst")}


def spool_wal(wal_cluster: WalCluster) -> list[str]:
    return sorted(path.name for path in wal_cluster.spool.iterdir() if not path.name.startswith((".", "archtemp")))


def decoded(path: Path) -> bytes:
    return subprocess.run(["zstd", "-q", "-d", "-c", str(path)], capture_output=True, check=True).stdout


def test_the_daemon_drains_the_spool_and_exports_the_wal_metrics(
    wal_cluster: WalCluster, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    port = free_port()
    daemon = DaemonProcess(daemon_policy(wal_cluster, tmp_path, port), port)
    daemons.append(daemon)
    daemon.wait_ready()
    segments = archive_some(wal_cluster, 2)
    daemon.wait_for("the spool to drain", lambda: not spool_wal(wal_cluster) and set(segments) <= set(stored(tmp_path)))
    shipped = daemon.wait_for(
        "the shipped counter",
        lambda: daemon.metric("dbguardian_wal_segments_shipped_total", target="app", storage="local"),
    )
    assert shipped >= len(segments)
    assert daemon.wait_for("the spool gauge", lambda: daemon.metric("dbguardian_wal_spool_segments", target="app") == 0)
    last = daemon.metric("dbguardian_wal_last_archived_timestamp_seconds", target="app", storage="local")
    assert last is not None and last > 0
    count = daemon.metric("dbguardian_wal_ship_duration_seconds_count", target="app")
    assert count is not None and count >= len(segments)
    assert daemon.stop() == 0


def test_kill_9_mid_ship_loses_nothing(wal_cluster: WalCluster, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    segments = archive_some(wal_cluster, 8)
    originals = tmp_path / "originals"
    shutil.copytree(wal_cluster.spool, originals)
    port = free_port()
    policy = daemon_policy(wal_cluster, tmp_path, port, parallel=1)

    first = DaemonProcess(policy, port)
    daemons.append(first)
    first.wait_for("the first object", lambda: stored(tmp_path), timeout=30)
    first.process.kill()  # SIGKILL: no cleanup of any kind
    first.process.wait()
    left = spool_wal(wal_cluster)
    assert left, "the kill came too late to be mid-ship"

    second = DaemonProcess(policy, port)
    daemons.append(second)
    second.wait_for("the spool to drain", lambda: not spool_wal(wal_cluster) and set(segments) <= set(stored(tmp_path)))
    objects = stored(tmp_path)
    for name in segments:
        data = decoded(objects[name])
        assert data == (originals / name).read_bytes(), name
        check_wal_file(name, data[:40], len(data))
    # Only committed objects are listed as WAL; what a killed write left is a hidden temp file.
    folder = tmp_path / "backups" / "app" / "wal" / "00000001"
    assert all(path.name.endswith(".zst") or ".tmp-" in path.name for path in folder.iterdir())
    assert asyncio.run(_listed(tmp_path)) >= set(segments)
    assert second.stop() == 0


async def _listed(tmp_path: Path) -> set[str]:
    from dbguardian.catalog.archive import list_wal
    from dbguardian.storage import LocalStorage

    return {item.name for item in await list_wal(LocalStorage("local", tmp_path / "backups"), "app")}
