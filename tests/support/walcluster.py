"""A PostgreSQL cluster archiving WAL into a spool (basic_archive), one per test, and a PITR policy for it.

initdb runs once per session (a template data directory); each test gets a copy with its own port,
spool and sample database, so tests never share WAL.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dbguardian.cli.demo import load_sample_data
from dbguardian.throwaway import ThrowawayCluster, free_port, short_tempdir
from tests.support.majors import lane_server_bin

BACKUP_ROLE = "backup"
DATABASE = "app"


@dataclass
class WalCluster:
    """A running cluster with ``archive_mode = on`` writing finished WAL into ``spool``."""

    cluster: ThrowawayCluster
    spool: Path
    password: str
    password_file: Path
    base: Path

    def dsn(self, database: str = DATABASE, user: str = BACKUP_ROLE) -> str:
        return self.cluster.dsn(database, user)

    def psql(self, sql: str, database: str = DATABASE) -> str:
        return self.cluster.psql(sql, database)

    def switch_wal(self) -> str:
        """Close the current segment (so the archiver hands it to the spool); returns its name."""
        return self.psql("SELECT pg_walfile_name(pg_switch_wal())", "postgres")

    def wait_archived(self, segment: str, timeout: float = 30) -> None:
        """Until PostgreSQL's archiver has put ``segment`` (or a later one) into the spool."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", "postgres")
            if last and last[:24] >= segment[:24]:
                return
            time.sleep(0.1)
        raise AssertionError(f"{segment} was not archived within {timeout}s")

    def policy(self, tmp_path: Path, *, storage: dict[str, Any] | None = None, **target: Any) -> Path:
        """A policy for target ``app`` with ``wal:`` on this cluster's spool; keyword arguments override target keys."""
        target_config: dict[str, Any] = {
            "dsn": self.dsn(),
            "password_file": str(self.password_file),
            "storage": list((storage or {"local": None}).keys()),
            "compression": {"algorithm": "zstd", "level": 3},
            "schedules": {
                "daily": {"cron": "0 2 * * *", "keep": 7},
                "base": {"cron": "0 3 * * 0", "keep": 2, "kind": "physical"},
            },
            "wal": {"spool": str(self.spool), "compression": {"algorithm": "zstd", "level": 3}, "rpo_target": "5m"},
        }
        target_config.update(target)
        policy: dict[str, Any] = {
            "version": 1,
            "state_dir": str(tmp_path / "state"),
            "storage": storage or {"local": {"type": "local", "path": str(tmp_path / "backups")}},
            "targets": {"app": target_config},
        }
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump(policy, sort_keys=False))
        return path

    def stop(self) -> None:
        self.cluster.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def make_template() -> Path:
    """initdb once: a data directory (stopped) with a backup role that may replicate."""
    base = short_tempdir("dbgwt-")
    cluster = ThrowawayCluster(base / "pg", bin_dir=lane_server_bin()).start()
    cluster.psql(f'CREATE ROLE "{BACKUP_ROLE}" LOGIN CREATEDB REPLICATION')
    cluster.stop(strict=True, mode="fast")  # a clean shutdown: copies of it start without crash recovery
    return base / "pg"


def start_wal_cluster(template: Path) -> WalCluster:
    base = short_tempdir("dbgw-")
    pg_dir = base / "pg"
    subprocess.run(["cp", "-a", str(template), str(pg_dir)], check=True)
    for stale in ("server.log", "data/postmaster.pid"):
        (pg_dir / stale).unlink(missing_ok=True)
    spool = pg_dir / "spool"  # inside the server owner's directory: basic_archive writes it, tests (root) read it
    spool.mkdir(mode=0o700)
    owner = (pg_dir / "data").stat()
    os.chown(spool, owner.st_uid, owner.st_gid)
    port = free_port()
    conf = pg_dir / "data" / "postgresql.conf"
    lines = [
        line for line in conf.read_text().splitlines() if not line.startswith(("port = ", "unix_socket_directories = "))
    ]
    lines += [
        f"port = {port}",
        f"unix_socket_directories = '{pg_dir / 'sock'}'",
        "archive_mode = on",
        "archive_library = 'basic_archive'",
        f"basic_archive.archive_directory = '{spool}'",
        "archive_timeout = 60",
        "wal_level = replica",
        "max_wal_senders = 10",
    ]
    conf.write_text("\n".join(lines) + "\n")
    os_user = pwd.getpwuid(owner.st_uid).pw_name if os.geteuid() == 0 else None
    cluster = ThrowawayCluster(pg_dir, port=port, os_user=os_user, bin_dir=lane_server_bin()).start()
    password = secrets.token_urlsafe(12)
    password_file = base / "backup.password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    cluster.psql(f"ALTER ROLE \"{BACKUP_ROLE}\" PASSWORD '{password}'")
    cluster.psql(f'CREATE DATABASE {DATABASE} OWNER "{BACKUP_ROLE}"')
    load_sample_data(cluster, DATABASE, owner=BACKUP_ROLE)
    return WalCluster(cluster, spool, password, password_file, base)
