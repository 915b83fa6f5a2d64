"""Fixtures: one real PostgreSQL cluster per test session, a fresh database per test, policy files."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from dbguardian.cli.demo import load_sample_data
from dbguardian.throwaway import ThrowawayCluster, short_tempdir
from tests.support.majors import lane_major, lane_server_bin, newest_client_bin

if TYPE_CHECKING:
    from tests.support.daemon import DaemonProcess
    from tests.support.receivers import HttpReceiver
    from tests.support.walcluster import WalCluster

BACKUP_ROLE = "backup"

_SLOW_DIRECTORIES = ("integration", "e2e", "storage", "versions")


def pytest_configure(config: pytest.Config) -> None:
    """In the PostgreSQL 18 lane (scripts/test), its client tools come first on PATH, where dbguardian's
    tool discovery looks (15's stay where Debian put them)."""
    if lane_major() != 15:
        os.environ["PATH"] = f"{newest_client_bin()}{os.pathsep}{os.environ.get('PATH', '')}"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """In the fast lane, do not even import the slow directories' modules (half of the collection time)."""
    if config.option.markexpr.replace(" ", "") == "notslow" and collection_path.name in _SLOW_DIRECTORIES:
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything outside tests/unit starts real servers: mark it slow, so `-m "not slow"` is the fast lane."""
    for item in items:
        if Path(item.path).parent.name in _SLOW_DIRECTORIES:
            item.add_marker(pytest.mark.slow)


@dataclass
class Postgres:
    cluster: ThrowawayCluster
    password: str
    password_file: Path

    def dsn(self, database: str, user: str = BACKUP_ROLE) -> str:
        return self.cluster.dsn(database, user)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self.cluster.psql(sql, database)


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    base = short_tempdir("dbgt-")
    cluster = ThrowawayCluster(base / "pg", bin_dir=lane_server_bin()).start()
    password = secrets.token_urlsafe(12)
    password_file = base / "backup.password"
    password_file.write_text(password + "\n")
    cluster.create_role(BACKUP_ROLE, password)
    try:
        yield Postgres(cluster, password, password_file)
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def empty_database(pg: Postgres) -> Iterator[str]:
    name = f"t_{secrets.token_hex(4)}"
    pg.psql(f'CREATE DATABASE {name} OWNER "{BACKUP_ROLE}"')
    yield name
    pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database(pg: Postgres, empty_database: str) -> str:
    """A fresh database holding the sample data (many types, two schemas, large objects)."""
    load_sample_data(pg.cluster, empty_database, owner=BACKUP_ROLE)
    return empty_database


@pytest.fixture
def dropper(pg: Postgres) -> Iterator[Callable[[str], str]]:
    """Register databases a test creates (restore targets) so they are dropped afterwards."""
    names: list[str] = []

    def register(name: str) -> str:
        names.append(name)
        return name

    yield register
    for name in names:
        pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


PolicyFactory = Callable[..., Path]


@pytest.fixture
def make_policy(tmp_path: Path, pg: Postgres) -> PolicyFactory:
    """Write a policy for target ``app`` on ``database``; keyword arguments override target keys."""

    def factory(database: str, *, extra: dict[str, Any] | None = None, **target: Any) -> Path:
        target_config: dict[str, Any] = {
            "dsn": pg.dsn(database),
            "password_file": str(pg.password_file),
            "storage": ["local"],
            "compression": {"algorithm": "zstd", "level": 3},
            "schedules": {"daily": {"cron": "0 2 * * *", "keep": 7}},
        }
        target_config.update(target)
        policy: dict[str, Any] = {
            "version": 1,
            "state_dir": str(tmp_path / "state"),
            "storage": {"local": {"type": "local", "path": str(tmp_path / "backups")}},
            "targets": {"app": target_config},
        }
        policy.update(extra or {})
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump(policy, sort_keys=False))
        return path

    return factory


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBGUARDIAN_", "PG"))}
    env.update(extra)
    return env


def run_cli(policy: Path | None, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dbguardian`` as a real subprocess."""
    argv = [sys.executable, "-m", "dbguardian", "--log-format", "json"]
    if policy is not None:
        argv += ["--policy", str(policy)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, env=cli_env(**env), check=False)


def backup_dir(policy_path: Path) -> Path:
    return Path(yaml.safe_load(policy_path.read_text())["storage"]["local"]["path"])


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemon subprocesses a test starts; killed afterwards whatever the test did."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.kill()


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    """A real HTTP server recording requests (stands in for Slack, webhooks, ping services)."""
    from tests.support.receivers import HttpReceiver

    receiver = HttpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def wal_template() -> Iterator[Path]:
    """A stopped, initialised data directory the `wal_cluster` fixture copies (initdb once per session)."""
    from tests.support.walcluster import make_template

    template = make_template()
    yield template
    shutil.rmtree(template.parent, ignore_errors=True)


@pytest.fixture
def wal_cluster(wal_template: Path) -> Iterator[WalCluster]:
    """A cluster of its own archiving into its spool with basic_archive, holding the sample data in `app`."""
    from tests.support.walcluster import start_wal_cluster

    cluster = start_wal_cluster(wal_template)
    yield cluster
    cluster.stop()
