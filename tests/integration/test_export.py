"""`dbguardian export`: a backup as a local file that plain pg_restore / psql restore."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PolicyFactory, Postgres, backup_dir, cli_env, run_cli
from tests.support.pg import backup, checksums


def restore_with(pg: Postgres, argv: list[str], into: str) -> None:
    """Run a plain PostgreSQL client (pg_restore or psql) as the backup role into a new database."""
    pg.psql(f'CREATE DATABASE "{into}" OWNER backup')
    env = {"PGPASSWORD": pg.password, "PATH": "/usr/bin:/bin"}
    subprocess.run([*argv, f"--dbname={pg.dsn(into)}"], env=env, check=True, capture_output=True)


def test_export_writes_files_plain_pg_restore_and_psql_restore(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], tmp_path: Path
) -> None:
    keygen = subprocess.run(["age-keygen", "-o", str(tmp_path / "id.txt")], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.strip().split("Public key: ")[1]
    policy = make_policy(database, encryption={"method": "age", "recipients": [recipient]})
    backup_id = backup(policy)
    identity = str(tmp_path / "id.txt")

    archive = tmp_path / "out" / "app.dump"
    archive.parent.mkdir()
    result = run_cli(policy, "export", "app", "-o", str(archive), "--identity", identity, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backup_id"] == backup_id and report["format"] == "custom" and report["bytes"] == archive.stat().st_size
    assert archive.read_bytes()[:5] == b"PGDMP" and archive.stat().st_mode & 0o777 == 0o600
    into = dropper(f"{database}_exp")
    restore_with(pg, [str(pg.cluster.bin_dir / "pg_restore"), "--exit-on-error", str(archive)], into)
    assert checksums(pg, into) == checksums(pg, database)

    script = tmp_path / "out" / "app.sql"
    plain = run_cli(policy, "export", "app", backup_id, "-o", str(script), "--format", "plain",
                    DBGUARDIAN_IDENTITY_FILE=identity)  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert b"CREATE TABLE" in script.read_bytes() and "sha256 verified" in plain.stdout
    into_sql = dropper(f"{database}_exp_sql")
    restore_with(pg, [str(pg.cluster.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)], into_sql)
    assert checksums(pg, into_sql) == checksums(pg, database)

    argv = [sys.executable, "-m", "dbguardian", "--policy", str(policy), "export", "app", "-o", "-", "--identity", identity]
    to_stdout = subprocess.run(argv, capture_output=True, env=cli_env(), check=False)
    assert to_stdout.returncode == 0 and b"exported backup" in to_stdout.stderr
    assert to_stdout.stdout == archive.read_bytes()  # the same archive, byte for byte

    no_key = run_cli(policy, "export", "app", "-o", str(tmp_path / "out" / "nokey.dump"))
    assert no_key.returncode != 0 and "--identity" in no_key.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["app.dump", "app.sql"]  # nothing half-written


def test_a_tampered_backup_never_becomes_an_export_file(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    policy = make_policy(database, compression={"algorithm": "none"})
    backup_id = backup(policy)
    dump = backup_dir(policy) / "app" / backup_id / "dump.pgc"
    data = bytearray(dump.read_bytes())
    data[-100] ^= 0x01
    dump.write_bytes(bytes(data))
    target = tmp_path / "out.dump"
    target.write_bytes(b"an older export")
    result = run_cli(policy, "export", "app", "-o", str(target))
    assert result.returncode == 1 and "corrupt or was changed" in result.stderr
    assert target.read_bytes() == b"an older export"  # not replaced
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".out")) == []


def test_export_globals_gives_the_roles_sql_when_the_backup_has_them(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    policy = make_policy(database, globals=True)
    backup(policy)
    roles = tmp_path / "globals.sql"
    result = run_cli(policy, "export", "app", "-o", str(roles), "--globals")
    assert result.returncode == 0, result.stderr
    assert "CREATE ROLE backup" in roles.read_text() and roles.stat().st_mode & 0o777 == 0o600
    without = make_policy(database)  # globals: false (the default)
    backup(without)
    refused = run_cli(without, "export", "app", "-o", str(tmp_path / "none.sql"), "--globals")
    assert refused.returncode == 2 and "holds no globals" in refused.stderr
