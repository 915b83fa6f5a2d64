"""Every PostgreSQL major, 13 to 18 (15, Debian's, also runs the whole suite; 18 a second lane).

For each, on a server of that major holding the sample data, as a user would run it:

- `wal setup` prints what that major archives with (``archive_command`` with ``wal-push`` before 15,
  ``basic_archive`` from 15), the lines go into postgresql.conf, and `wal setup` then says ok;
- a logical backup, restored with its row counts verified, equal to the source, and a drill that passes;
- a base backup, a restore point, and a point-in-time restore to it that starts on that major's server;
- the logical backup restored onto the newest server (18): the upgrade path (docs/guides/upgrade.md).

Client tools: the servers from npm have none, so the policy's ``pg_bin_dirs`` names the server's own
directory (pg_ctl, for the point-in-time restore) and PostgreSQL 18's tools; the discovery picks the
oldest client that is not older than the server (15's from Debian for 13 to 15, 18's for 16 to 18).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbguardian.catalog import keys
from dbguardian.cli.demo import load_sample_data
from dbguardian.dbfacts import content_checksums
from dbguardian.postgres import ConnectionInfo, connected
from dbguardian.throwaway import ThrowawayCluster, free_port, short_tempdir
from tests.conftest import run_cli
from tests.integration.test_pitr import Restored, executable_env, give_to_server_user
from tests.integration.test_pitr_drill import run_as_server_user
from tests.support.majors import MAJORS, NEWEST, newest_client_bin, server_bin

ROLE = "backup"
CHECKSUM = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM smoke t"


@dataclass
class Server:
    cluster: ThrowawayCluster
    password_file: Path
    base: Path

    def psql(self, sql: str, database: str = "app") -> str:
        return self.cluster.psql(sql, database)

    def dsn(self, database: str) -> str:
        return self.cluster.dsn(database, ROLE)

    def checksums(self, database: str) -> dict[str, str]:
        """md5 of every table's rows, of the large objects and of the sequence values."""

        async def read() -> dict[str, str]:
            info = ConnectionInfo(self.dsn(database), self.password_file.read_text().strip(), database)
            async with connected(info) as connection:
                return await content_checksums(connection)

        return asyncio.run(read())


def start_server(major: int, *, superuser: bool = False, **settings: str) -> Server:
    base = short_tempdir(f"dbgv{major}-")
    cluster = ThrowawayCluster(base / "pg", bin_dir=server_bin(major), settings=settings).start()
    password = secrets.token_urlsafe(12)
    password_file = base / "password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    attributes = "SUPERUSER" if superuser else "CREATEDB REPLICATION"
    cluster.psql(f"CREATE ROLE \"{ROLE}\" LOGIN {attributes} PASSWORD '{password}'")
    return Server(cluster, password_file, base)


@pytest.fixture(scope="module")
def newest() -> Iterator[Server]:
    """The server every older major's backup is restored onto (the upgrade path), by a superuser: the
    objects keep their owners (a dump of 13 or 14 gives the public schema to its bootstrap superuser,
    which only a superuser can do on 15 and newer)."""
    server = start_server(NEWEST, superuser=True)
    yield server
    server.cluster.stop()
    shutil.rmtree(server.base, ignore_errors=True)


def write_policy(server: Server, major: int, work: Path, **schedules: dict[str, Any]) -> Path:
    spool = server.base / "pg" / "spool"  # the server's OS user writes it (basic_archive or wal-push)
    spool.mkdir(mode=0o700)
    owner = (server.base / "pg" / "data").stat()
    shutil.chown(spool, owner.st_uid, owner.st_gid)
    policy: dict[str, Any] = {
        "version": 1,
        "state_dir": str(work / "state"),
        "pg_bin_dirs": [str(server_bin(major)), str(newest_client_bin())],
        "storage": {"local": {"type": "local", "path": str(work / "backups")}},
        "targets": {
            "app": {
                "dsn": server.dsn("app"),
                "password_file": str(server.password_file),
                "storage": ["local"],
                "compression": {"algorithm": "zstd", "level": 3},
                "schedules": {
                    "daily": {"cron": "0 2 * * *", "keep": 7},
                    "base": {"cron": "0 3 * * 0", "keep": 2, "kind": "physical"},
                    **schedules,
                },
                "wal": {"spool": str(spool), "compression": {"algorithm": "zstd", "level": 3}, "rpo_target": "5m"},
            }
        },
    }
    path = work / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def configure_archiving(server: Server, policy: Path, env: dict[str, str], major: int) -> list[str]:
    """`wal setup`'s lines into postgresql.conf, then a reload; returns the lines."""
    setup = run_cli(policy, "wal", "setup", "app", timeout=60, **env)
    assert setup.returncode == 1 and "missing:" in setup.stderr, setup.stderr
    lines = [line for line in setup.stdout.split("\n\n")[0].splitlines() if not line.startswith("#")]
    settings = dict(line.split(" = ", 1) for line in lines)
    if major < 15:
        assert "archive_library" not in settings
        assert " wal-push " in settings["archive_command"] and settings["archive_command"].endswith(" %p'")
        # The server runs it with its own PATH: the command names dbguardian by its absolute path.
        assert settings["archive_command"].startswith("'/"), settings["archive_command"]
    else:
        assert settings["archive_library"] == "'basic_archive'" and "archive_command" not in settings
    with (server.base / "pg" / "data" / "postgresql.conf").open("a") as conf:
        conf.write("\n".join(lines) + "\n")
    # A reload would do (archive_mode is on already), but the archiver it restarts for a new
    # archive_library comes back only after a delay of its own: a restart is quicker here.
    server.cluster.stop(strict=True, mode="fast")
    server.cluster.start()
    again = run_cli(policy, "wal", "setup", "app", timeout=60, **env)
    assert again.returncode == 0 and "ok: the server archives WAL" in again.stdout, again.stdout + again.stderr
    return lines


@dataclass
class ArchivingApp:
    """A server of one major archiving into its spool as `wal setup` says, database ``app`` on it, and
    the policy of target ``app`` (see :func:`archiving_app`)."""

    server: Server
    work: Path
    policy: Path
    env: dict[str, str]
    archiving: list[str]
    """The lines `wal setup` printed (now in postgresql.conf)."""


@contextlib.contextmanager
def archiving_app(
    major: int, *, sample_data: bool = True, schedules: dict[str, dict[str, Any]] | None = None, **settings: str
) -> Iterator[ArchivingApp]:
    """Start a server of ``major`` (``settings`` added to postgresql.conf), create ``app`` (with the sample
    data), write the policy (``schedules`` added) and configure archiving from `wal setup`; stop and remove
    everything on exit. archive_mode needs a restart, so it is on from the start; wal setup supplies the rest."""
    server = start_server(major, superuser=False, wal_level="replica", archive_mode="on", max_wal_senders="10", **settings)
    work = short_tempdir(f"dbgvw{major}-")
    try:
        server.psql(f'CREATE DATABASE app OWNER "{ROLE}"', "postgres")
        if sample_data:
            load_sample_data(server.cluster, "app", owner=ROLE)
        policy = write_policy(server, major, work, **(schedules or {}))
        env = executable_env(work)
        give_to_server_user(work)  # wal-push (13, 14) and wal-fetch run as the server's OS user
        lines = configure_archiving(server, policy, env, major)
        yield ArchivingApp(server, work, policy, env, lines)
    finally:
        server.cluster.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("major", MAJORS)
def test_backup_restore_drill_pitr_and_upgrade_on_each_major(major: int, newest: Server) -> None:
    restored: list[Restored] = []
    with archiving_app(major) as app:
        server, work, policy, env = app.server, app.work, app.policy, app.env
        try:
            server.psql(f'CREATE TABLE smoke (id int PRIMARY KEY, v text); ALTER TABLE smoke OWNER TO "{ROLE}"')
            server.psql("INSERT INTO smoke SELECT g, 'a' || g FROM generate_series(1, 200) g")
            source = server.checksums("app")
            assert len(source) > 10

            # Logical: backup, then restore (its row counts verified by the restore itself).
            backup = run_cli(policy, "backup", "app")
            assert backup.returncode == 0, backup.stderr
            backup_id = backup.stdout.strip().splitlines()[-1]
            manifest = json.loads((work / "backups" / keys.manifest_key("app", backup_id)).read_text())
            assert manifest["server_version"].startswith(f"{major}.")
            assert manifest["row_counts_from"] == "dump"  # pg_dump 15's and 18's archives, counted as they stream
            restore = run_cli(policy, "restore", "app", backup_id, "--into", "copy", "--json")
            assert restore.returncode == 0, restore.stderr
            # 16's backup was taken with pg_dump 18 (no 16 client here): pg_restore 18 writes a script for psql
            # without its `SET transaction_timeout`, which 16 does not know.
            assert json.loads(restore.stdout)["mode"] == ("script through psql" if major == 16 else "stream")
            assert server.checksums("copy") == source

            # The upgrade path: the same backup onto the newest server, counts verified.
            upgraded = run_cli(policy, "restore", "app", backup_id, "--into", f"from_{major}", "--dsn",
                               newest.dsn("postgres"), "--password-file", str(newest.password_file), "--json")  # fmt: skip
            assert upgraded.returncode == 0, upgraded.stderr
            assert newest.checksums(f"from_{major}") == source

            # Physical: base backup, a restore point, then a point-in-time restore to it on this major's server.
            # (Granted after the logical restores: a grant on a pg_catalog function is dumped, and only a
            # superuser may restore it.)
            server.psql("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO backup")
            base = run_cli(policy, "backup", "app", "--physical")
            assert base.returncode == 0, base.stderr
            server.psql("INSERT INTO smoke SELECT g, 'b' || g FROM generate_series(201, 300) g")
            at_point = server.psql(CHECKSUM)
            point = run_cli(policy, "restore-point", "app", "smoke_point", "--wait", "--json", timeout=120, **env)
            assert point.returncode == 0 and json.loads(point.stdout)["archived"] is True, point.stderr
            server.psql("DELETE FROM smoke WHERE id > 100")
            give_to_server_user(work)
            port = free_port()
            pitr = run_cli(policy, "restore", "app", "--pitr", "--pgdata", str(work / "pitr"), "--to-name", "smoke_point",
                           "--start", "--port", str(port), "--json", timeout=180, **env)  # fmt: skip
            assert pitr.returncode == 0, pitr.stderr[-2000:]
            copy = Restored(json.loads(pitr.stdout))
            restored.append(copy)
            assert copy.psql(CHECKSUM) == at_point
            assert copy.psql("SHOW server_version_num").startswith(str(major))

            # A drill (of the newest base backup: the target archives WAL) on a throwaway server of this major,
            # run as the server's OS user, as dbguardian runs on a database host.
            give_to_server_user(work)
            give_to_server_user(server.password_file)
            drill = run_as_server_user(env, policy, "drill", "app", "--json")
            assert drill.returncode == 0, drill.stdout + drill.stderr
            assert json.loads(drill.stdout[: drill.stdout.rindex("}") + 1])["ok"] is True
        finally:
            for copy in restored:
                copy.stop()
            newest.psql(f"DROP DATABASE IF EXISTS from_{major}", "postgres")
