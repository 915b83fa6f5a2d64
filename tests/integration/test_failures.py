"""Honest failures: whatever goes wrong, exit 1 with the reason and nothing that looks like a backup."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbguardian.errors import ToolError
from dbguardian.postgres import find_tool
from tests.conftest import PolicyFactory, Postgres, backup_dir, cli_env, run_cli
from tests.support.pg import backup, listed


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()) if root.exists() else []


class TableLock:
    """Holds ACCESS EXCLUSIVE on a table from a separate psql session, so pg_dump waits mid-backup."""

    def __init__(self, pg: Postgres, database: str, table: str) -> None:
        cluster = pg.cluster
        argv = [str(cluster.bin_dir / "psql"), "-X", "-q", "-h", str(cluster.socket_dir), "-p", str(cluster.port),
                "-U", "postgres", "-d", database]  # fmt: skip
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, text=True)
        assert self.process.stdin is not None
        self.process.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT 1;\n")
        self.process.stdin.flush()

    def release(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("ROLLBACK;\n")
            self.process.stdin.close()
            self.process.wait(timeout=30)


@pytest.fixture
def orders_locked(pg: Postgres, database: str) -> Iterator[TableLock]:
    lock = TableLock(pg, database, "shop.orders")
    deadline = time.monotonic() + 10
    while pg.psql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted "
                  "AND relation = 'shop.orders'::regclass", database) == "0":  # fmt: skip
        assert time.monotonic() < deadline, "lock not taken"
        time.sleep(0.05)
    yield lock
    lock.release()


def pg_dump_processes(parent: int | None = None) -> list[tuple[int, str]]:
    """pg_dump processes started by dbguardian (``--snapshot``), optionally only children of ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if parent is not None and ppid != parent:
            continue
        if argv and argv[0].endswith(b"pg_dump") and any(arg.startswith(b"--snapshot=") for arg in argv):
            found.append((int(entry.name), b" ".join(argv).decode()))
    return found


def alive(pid: int) -> bool:
    try:
        return b"zombie" not in Path(f"/proc/{pid}/status").read_bytes()
    except FileNotFoundError:
        return False


def start_backup(policy: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dbguardian", "--log-format", "json", "--log-level", "debug", "--policy", str(policy),
         "backup", "app"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )  # fmt: skip


def wait_for_blocked_dump(pg: Postgres, database: str) -> None:
    deadline = time.monotonic() + 30
    while pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND application_name = "
                  "'pg_dump' AND wait_event_type = 'Lock'") == "0":  # fmt: skip
        assert time.monotonic() < deadline, "pg_dump never started waiting"
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_backup_kills_pg_dump_and_removes_temp_files(
    pg: Postgres, database: str, make_policy: PolicyFactory, orders_locked: TableLock, signum: signal.Signals
) -> None:
    policy = make_policy(database)
    process = start_backup(policy)
    wait_for_blocked_dump(pg, database)
    [(dump_pid, dump_argv)] = pg_dump_processes(parent=process.pid)
    assert pg.password not in dump_argv  # secrets travel in the environment, never in arguments
    assert any(".tmp-" in name for name in files_under(backup_dir(policy)))

    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert f"error: interrupted by {signum.name}" in stderr
    assert files_under(backup_dir(policy)) == []
    assert not alive(dump_pid)
    assert pg.password not in stderr
    assert listed(policy) == []


def test_kill_9_leaves_nothing_listed_and_later_runs_clean_up(
    pg: Postgres, database: str, make_policy: PolicyFactory, orders_locked: TableLock
) -> None:
    policy = make_policy(database, extra={"leftover_grace": "1s"})
    process = start_backup(policy)
    wait_for_blocked_dump(pg, database)
    [(dump_pid, _)] = pg_dump_processes(parent=process.pid)
    process.kill()
    process.wait(timeout=10)
    leftovers = files_under(backup_dir(policy))
    assert leftovers and all(".tmp-" in name for name in leftovers)
    assert listed(policy) == []

    orders_locked.release()  # the orphaned pg_dump now writes into a closed pipe and dies
    deadline = time.monotonic() + 20
    while alive(dump_pid):
        assert time.monotonic() < deadline, "orphaned pg_dump still running"
        time.sleep(0.1)
    time.sleep(1.1)  # past the grace period
    new_id = backup(policy)
    assert [entry["id"] for entry in listed(policy)] == [new_id]
    assert all(name.startswith(f"app/{new_id}/") for name in files_under(backup_dir(policy)))


def test_lost_connection_mid_dump(pg: Postgres, database: str, make_policy: PolicyFactory, orders_locked: TableLock) -> None:
    policy = make_policy(database)
    process = start_backup(policy)
    wait_for_blocked_dump(pg, database)
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pg_dump'")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "error: pg_dump exited with code 1" in stderr and "terminat" in stderr
    assert files_under(backup_dir(policy)) == []
    assert listed(policy) == []


def test_pg_dump_permission_denied(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    pg.psql("CREATE TABLE public.secret_stuff (x int); INSERT INTO public.secret_stuff VALUES (1)", database)
    policy = make_policy(database)
    result = run_cli(policy, "backup", "app")
    assert result.returncode == 1
    assert "permission denied for table secret_stuff" in result.stderr
    assert "Traceback" not in result.stderr
    assert listed(policy) == []


def fake_pg_dump(directory: Path, body: str) -> Path:
    """A scripted pg_dump for failure paths a real server cannot be made to produce on demand."""
    directory.mkdir()
    script = directory / "pg_dump"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 15.99"; exit 0; fi\n{body}\n')
    script.chmod(0o755)
    return directory


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("printf 'PGDMP partial'; echo 'pg_dump: error: simulated failure' >&2; exit 0",
         "pg_dump exited with code 0: pg_dump: error: simulated failure"),
        ("printf 'PGDMP partial'; echo 'something odd' >&2; exit 3", "pg_dump exited with code 3: something odd"),
        ("kill -9 $$", "pg_dump was killed by signal 9"),
    ],
)  # fmt: skip
def test_pg_dump_reported_failure(
    database: str, make_policy: PolicyFactory, tmp_path: Path, body: str, message: str
) -> None:
    bin_dir = fake_pg_dump(tmp_path / "fakebin", body)
    policy = make_policy(database, extra={"pg_bin_dirs": [str(bin_dir)]})
    result = run_cli(policy, "backup", "app")
    assert result.returncode == 1
    assert f"error: {message}" in result.stderr
    assert files_under(backup_dir(policy)) == []
    assert listed(policy) == []


def test_wrong_password(pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password-42")
    policy = make_policy(database, password_file=str(wrong))
    result = run_cli(policy, "backup", "app")
    assert result.returncode == 1
    assert f"error: cannot connect to backup@127.0.0.1:{pg.cluster.port}/{database}" in result.stderr
    assert "password authentication failed" in result.stderr
    assert "not-the-password-42" not in result.stderr + result.stdout


def test_password_in_dsn_is_never_printed(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    from dbguardian.throwaway import free_port

    port = free_port()
    policy = make_policy(database, dsn=f"postgresql://backup:hunter2secret@127.0.0.1:{port}/{database}", password_file=None)
    result = run_cli(policy, "backup", "app")
    assert result.returncode == 1
    assert f"cannot connect to backup@127.0.0.1:{port}/{database}" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout


def test_unknown_target_is_usage_error(database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database)
    result = run_cli(policy, "backup", "nosuch")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("error: unknown target 'nosuch' (policy defines: app)")
    result = run_cli(policy, "restore", "app", "latest")
    assert result.returncode == 2 and "restore needs --into" in result.stderr


def test_restore_without_backups(database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database)
    result = run_cli(policy, "restore", "app", "latest", "--into", "whatever")
    assert result.returncode == 1
    assert "error: target 'app' has no valid backup" in result.stderr
    result = run_cli(policy, "restore", "app", "20260101T000000.000000Z-abcd", "--validate-only")
    assert result.returncode == 1
    assert "no valid backup '20260101T000000.000000Z-abcd'" in result.stderr


def test_full_disk(pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        policy = make_policy(database, extra={"storage": {"local": {"type": "local", "path": str(mount)}}})
        result = run_cli(policy, "backup", "app")
        assert result.returncode == 1
        assert "no space left on device" in result.stderr
        assert files_under(mount) == []
        assert listed(policy) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_only_older_tool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"no pg_dump for PostgreSQL 99 or newer \(found: .*pg_dump \(15\)") as refused:
        asyncio.run(find_tool("pg_dump", 99, [tmp_path]))
    # Where it looked, so the operator knows which directory to fix.
    assert f"looked in pg_bin_dirs {tmp_path}, PATH, /usr/lib/postgresql/*/bin" in str(refused.value)


def test_unreachable_server_unix_socket(database: str, make_policy: PolicyFactory, tmp_path: Path) -> None:
    policy = make_policy(database, dsn=f"postgresql://backup@/{database}?host={tmp_path}&port=1")
    result = run_cli(policy, "backup", "app")
    assert result.returncode == 1 and "error: cannot connect to" in result.stderr
    assert files_under(backup_dir(policy)) == []
    assert listed(policy) == []
