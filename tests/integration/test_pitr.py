"""Point-in-time recovery end to end on a real PostgreSQL 15 archiving into its spool: base backup
(`backup --physical`) + WAL shipped by `restore-point --wait`, then `restore --pitr --start` to a name, a
time and the end of the archive, each compared with table checksums taken at that moment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dbguardian.throwaway import free_port, short_tempdir
from tests.conftest import run_cli
from tests.support.majors import lane_bin
from tests.support.walcluster import WalCluster

CHECKSUM = "SELECT coalesce(md5(string_agg(t::text, ',' ORDER BY id)), 'none') FROM t"
OS_USER = "postgres"


def as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *argv] if os.geteuid() == 0 else argv


def executable_env(base: Path) -> dict[str, str]:
    """restore_command runs dbguardian as the server's OS user. Where that user cannot run this
    interpreter (a venv under /root), a wrapper runs the system Python of the same version on this
    checkout and its installed packages."""
    probe = subprocess.run(as_server_user([sys.executable, "-V"]), capture_output=True, check=False)
    if probe.returncode == 0:
        return {}
    paths = ":".join([str(Path(__file__).resolve().parents[2]), sysconfig.get_paths()["purelib"]])
    wrapper = base / "dbguardian-as-server-user"
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={paths} exec {python} -S -m dbguardian "$@"\n')
    wrapper.chmod(0o755)
    return {"DBGUARDIAN_RESTORE_EXECUTABLE": str(wrapper)}


def give_to_server_user(path: Path) -> None:
    """Local storage and policy readable by the OS user that runs restore_command (as on a DB host,
    where dbguardian runs as that user)."""
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{OS_USER}:", str(path)], check=True)


class Restored:
    def __init__(self, report: dict[str, object]) -> None:
        self.report = report
        self.pgdata = Path(str(report["pgdata"]))

    def psql(self, sql: str, database: str = "app") -> str:
        argv = [lane_bin("psql"), "-X", "-A", "-t", "-h", str(self.report["socket_dir"]), "-p", str(self.report["port"])]
        result = subprocess.run(
            as_server_user([*argv, "-U", "postgres", "-d", database, "-c", sql]), capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def stop(self) -> None:
        subprocess.run(
            as_server_user([lane_bin("pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "stop"]),
            capture_output=True,
            check=False,
        )
        # The socket directory the restore made for the server (/tmp/dbg-pitr-*) outlives it otherwise.
        socket_dir = Path(str(self.report["socket_dir"]))
        if socket_dir.name.startswith("dbg-pitr-"):
            shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
def restored() -> Iterator[list[Restored]]:
    started: list[Restored] = []
    yield started
    for server in started:
        server.stop()


def restore(policy: Path, env: dict[str, str], pgdata: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(policy, "restore", "app", "--pitr", "--pgdata", str(pgdata), *args, "--json", timeout=180, **env)


def started(policy: Path, env: dict[str, str], pgdata: Path, servers: list[Restored], *args: str) -> Restored:
    port = free_port()
    result = restore(policy, env, pgdata, *args, "--start", "--port", str(port))
    assert result.returncode == 0, result.stderr[-2000:]
    server = Restored(json.loads(result.stdout))
    servers.append(server)
    assert server.report["port"] == port and server.report["started"] is True
    assert server.report["timeline"] == 2 and server.report["reached_lsn"]
    assert server.psql("SHOW archive_mode") == "off"
    assert server.psql("SELECT pg_is_in_recovery()") == "f"
    return server


def test_pitr_to_name_time_and_latest(wal_cluster: WalCluster, restored: list[Restored]) -> None:
    base = short_tempdir("dbgpitr-")
    try:
        policy = wal_cluster.policy(base)
        env = executable_env(base)
        wal_cluster.psql("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO backup")
        wal_cluster.psql(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 100) g"
        )
        backup = run_cli(policy, "backup", "app", "--physical")
        assert backup.returncode == 0, backup.stderr
        backup_id = backup.stdout.strip().splitlines()[-1]

        # After the backup: more rows, a restore point, the moment, then the table dropped.
        wal_cluster.psql(
            "INSERT INTO t SELECT g, 'b' || g FROM generate_series(101, 250) g; UPDATE t SET v = 'c' WHERE id % 7 = 0"
        )
        at_point = wal_cluster.psql(CHECKSUM)
        point = run_cli(policy, "restore-point", "app", "before_drop", "--wait", "--json")
        assert point.returncode == 0, point.stderr
        assert json.loads(point.stdout)["archived"] is True
        point_lsn = json.loads(point.stdout)["lsn"]
        wal_cluster.psql("INSERT INTO t VALUES (1000, 'after the point')")
        at_time = wal_cluster.psql(CHECKSUM)
        moment = wal_cluster.psql(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
        time.sleep(0.05)
        wal_cluster.psql("DROP TABLE t; CREATE TABLE u AS SELECT 1 AS x")
        end = run_cli(policy, "restore-point", "app", "end", "--wait")
        assert end.returncode == 0, end.stderr
        give_to_server_user(base)

        # The restores run side by side (each replays through wal-fetch as the server's OS user).
        with ThreadPoolExecutor(6) as pool:
            jobs: dict[str, Future[Any]] = {
                "name": pool.submit(started, policy, env, base / "by-name", restored, "--to-name", "before_drop"),
                "time": pool.submit(started, policy, env, base / "by-time", restored, "--to-time", moment),
                "latest": pool.submit(started, policy, env, base / "latest", restored, "--to-latest"),
                "lsn": pool.submit(started, policy, env, base / "by-lsn", restored, "--to-lsn", point_lsn),
                "missing": pool.submit(
                    restore,
                    policy,
                    env,
                    base / "missing",
                    "--to-name",
                    "no_such_point",
                    "--start",
                    "--port",
                    str(free_port()),
                ),
                "prepared": pool.submit(
                    run_cli, policy, "restore", "app", "--pitr", "--pgdata", str(base / "prepared"), timeout=180, **env
                ),
            }
        by_name, by_time, latest = (jobs[kind].result() for kind in ("name", "time", "latest"))
        assert by_name.report["backup_id"] == backup_id
        assert by_name.psql(CHECKSUM) == at_point
        assert by_name.psql("SELECT count(*) FROM pg_class WHERE relname = 'u'") == "0"

        by_lsn = jobs["lsn"].result()
        assert by_lsn.psql(CHECKSUM) == at_point
        assert by_lsn.report["recovery_target"] == {"kind": "lsn", "value": point_lsn}

        assert by_time.psql(CHECKSUM) == at_time != at_point
        assert str(by_time.report["reached_time"]) <= moment

        assert latest.psql("SELECT count(*) FROM pg_class WHERE relname = 't'") == "0"
        assert latest.psql("SELECT x FROM u") == "1"

        missing = jobs["missing"].result()
        assert missing.returncode == 1 and "recovery target was not reached" in missing.stderr, missing.stderr[-2000:]

        # Without --start: a data directory ready to start, and the command that starts it.
        prepared = jobs["prepared"].result()
        assert prepared.returncode == 0, prepared.stderr[-2000:]
        assert "Next, start it" in prepared.stdout and f"pg_ctl -D {base / 'prepared'}" in prepared.stdout
        assert (base / "prepared" / "recovery.signal").exists() and (base / "prepared" / "backup_label").exists()
        assert not (base / "prepared" / "postmaster.pid").exists()
        settings = (base / "prepared" / "postgresql.auto.conf").read_text()
        assert f"wal-fetch --policy {policy} --target app %f %p'" in settings and "archive_mode = 'off'" in settings
        assert (base / "prepared").stat().st_mode & 0o777 == 0o700

        # A restored copy archives nothing: no timeline-2 file reaches the source's spool or storage.
        for server in restored:
            server.psql("SELECT pg_switch_wal()", "postgres")
        time.sleep(1)
        assert not [p.name for p in wal_cluster.spool.iterdir() if p.name.startswith("00000002")]
        assert not list((base / "backups" / "app" / "wal").glob("00000002"))

        # Refusals: before the backup's end, past the archived WAL, a non-empty data directory.
        early = restore(policy, env, base / "early", "--to-time", "2000-01-01T00:00:00Z")
        assert early.returncode == 1 and "before the end of base backup" in early.stderr, early.stderr
        future = restore(policy, env, base / "future", "--to-time", "2999-01-01T00:00:00Z")
        assert future.returncode == 1 and "past the archived WAL (newest segment" in future.stderr, future.stderr
        assert not (base / "future").exists() or not any((base / "future").iterdir())
        naive = restore(policy, env, base / "naive", "--to-time", "2026-01-01T00:00:00")
        assert naive.returncode == 2 and "no time zone" in naive.stderr
        busy = base / "busy"
        busy.mkdir()
        (busy / "keep.txt").write_text("mine")
        refused = restore(policy, env, busy, "--to-latest")
        assert refused.returncode == 1 and "not an empty directory" in refused.stderr, refused.stderr
        assert (busy / "keep.txt").read_text() == "mine"
    finally:
        for server in restored:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_encrypted_pitr_with_identity(wal_cluster: WalCluster, restored: list[Restored]) -> None:
    """Base backup and WAL encrypted with age: restore_command gets the identity file's path; a file the
    server's OS user cannot read is refused before anything is extracted."""
    base = short_tempdir("dbgpitr-")
    try:
        identity = base / "identity.txt"
        keygen = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
        recipient = keygen.stderr.strip().split("Public key: ")[1]
        policy = wal_cluster.policy(base, encryption={"method": "age", "recipients": [recipient]})
        env = executable_env(base)
        wal_cluster.psql("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO backup")
        wal_cluster.psql(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 's' || g FROM generate_series(1, 50) g"
        )
        backup = run_cli(policy, "backup", "app", "--physical")
        assert backup.returncode == 0, backup.stderr
        wal_cluster.psql("INSERT INTO t VALUES (51, 'after the backup')")
        expected = wal_cluster.psql(CHECKSUM)
        point = run_cli(policy, "restore-point", "app", "secret_point", "--wait")
        assert point.returncode == 0, point.stderr
        wal_cluster.psql("DELETE FROM t")
        assert list((base / "backups" / "app" / "wal" / "00000001").glob("*.zst.age"))
        give_to_server_user(base)

        identity.chmod(0o600)
        os.chown(identity, 0, 0)
        if os.geteuid() == 0:
            unreadable = restore(policy, env, base / "unreadable", "--to-name", "secret_point", "--identity", str(identity))
            assert unreadable.returncode == 2 and "is not readable by OS user postgres" in unreadable.stderr, (
                unreadable.stderr
            )
            assert not (base / "unreadable").exists() or not any((base / "unreadable").iterdir())
        give_to_server_user(identity)

        server = started(policy, env, base / "restored", restored, "--to-name", "secret_point", "--identity", str(identity))
        assert server.psql(CHECKSUM) == expected
        assert str(identity) in (base / "restored" / "postgresql.auto.conf").read_text()
    finally:
        for server in restored:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
