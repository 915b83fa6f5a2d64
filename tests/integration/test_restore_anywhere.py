"""Restore anywhere: the backup from before a moment (`--before`), onto another server (`--dsn`)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dbguardian.dbfacts import content_checksums
from dbguardian.postgres import ConnectionInfo, connected
from dbguardian.throwaway import ThrowawayCluster, short_tempdir
from tests.conftest import PolicyFactory, Postgres, run_cli
from tests.support.majors import lane_server_bin
from tests.support.pg import backup, checksums, listed

RESTORER = "restorer"


def started_at(policy: Path, backup_id: str) -> datetime:
    [entry] = [item for item in listed(policy, "app") if item["id"] == backup_id]
    return datetime.fromisoformat(entry["started_at"].replace("Z", "+00:00"))


def test_before_picks_the_newest_backup_taken_then_or_earlier(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str]
) -> None:
    policy = make_policy(database, extra={"timezone": "Europe/Berlin"})
    first = backup(policy, "--tier", "daily")
    pg.psql("INSERT INTO public.settings VALUES ('after-first', 'x')", database)
    second = backup(policy, "--tier", "weekly")
    second_rows = pg.psql("SELECT count(*) FROM public.settings", database)
    pg.psql("INSERT INTO public.settings VALUES ('after-second', 'x')", database)
    # The third starts in a later wall-clock second than the second (a backup here takes well under
    # one): the second-granular time below must fall after the second backup's start.
    next_second = started_at(policy, second).replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (next_second - datetime.now(UTC)).total_seconds()))
    third = backup(policy)
    assert len({first, second, third}) == 3

    # The second backup's own start, as ISO 8601 with a zone: inclusive, across tiers.
    at_second = started_at(policy, second).isoformat()
    into = dropper(f"{database}_before")
    result = run_cli(policy, "restore", "app", "--before", at_second, "--into", into, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backup_id"] == second
    assert pg.psql("SELECT count(*) FROM public.settings", into) == second_rows

    # A wall-clock time without a zone is the policy's (Europe/Berlin): just before the third backup.
    local = started_at(policy, third).astimezone(ZoneInfo("Europe/Berlin")).replace(tzinfo=None)
    checked = run_cli(policy, "restore", "app", "--before", f"{local:%Y-%m-%d %H:%M:%S}", "--validate-only", "--json")
    assert checked.returncode == 0, checked.stderr
    # Second granularity: the third started within this second or just after it.
    assert json.loads(checked.stdout)["backup_id"] in {second, third}
    earlier = started_at(policy, second).astimezone(ZoneInfo("Europe/Berlin")).replace(tzinfo=None)
    checked = run_cli(policy, "restore", "app", "--before", earlier.isoformat(" "), "--validate-only", "--json")
    assert json.loads(checked.stdout)["backup_id"] == second

    none = run_cli(policy, "restore", "app", "--before", "2001-01-01 00:00", "--into", dropper(f"{database}_none"))
    assert none.returncode == 1
    # Midnight in Berlin is 23:00 UTC the day before: the zone was applied.
    assert "no valid backup from 2000-12-31T23:00:00Z or earlier" in none.stderr and "Traceback" not in none.stderr
    bad = run_cli(policy, "restore", "app", "--before", "yesterday noon", "--into", "x")
    assert bad.returncode == 2 and "--before" in bad.stderr and "ISO 8601" in bad.stderr
    both = run_cli(policy, "restore", "app", first, "--before", at_second, "--into", "x")
    assert both.returncode == 2 and "not both" in both.stderr
    with_pitr = run_cli(policy, "restore", "app", "--pitr", "--before", at_second, "--pgdata", "/nonexistent")
    assert with_pitr.returncode == 2 and "--before" in with_pitr.stderr


@pytest.fixture(scope="module")
def second_server() -> Iterator[tuple[ThrowawayCluster, str]]:
    """Another PostgreSQL 15 (the new host of a disaster recovery), with a login role that may create databases."""
    base = short_tempdir("dbgt2-")
    cluster = ThrowawayCluster(base / "pg", bin_dir=lane_server_bin()).start()
    password = secrets.token_urlsafe(12)
    cluster.create_role(RESTORER, password)
    try:
        yield cluster, password
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def checksums_on(cluster: ThrowawayCluster, password: str, database: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        info = ConnectionInfo(cluster.dsn(database, RESTORER), password, database)
        async with connected(info) as connection:
            return await content_checksums(connection)

    return asyncio.run(read())


def test_dsn_restores_onto_another_server_without_a_password_in_the_arguments(
    pg: Postgres, database: str, make_policy: PolicyFactory, second_server: tuple[ThrowawayCluster, str], tmp_path: Path
) -> None:
    cluster, password = second_server
    policy = make_policy(database)
    backup(policy)
    dsn = cluster.dsn("postgres", RESTORER)

    # The password from the environment (as libpq reads it); the target's own server is not touched.
    result = run_cli(policy, "restore", "app", "--into", "recovered", "--dsn", dsn, "--no-owner", "--json",
                     PGPASSWORD=password)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["server"] == f"{RESTORER}@127.0.0.1:{cluster.port}/recovered"
    assert checksums_on(cluster, password, "recovered") == checksums(pg, database)
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'recovered'") == "0"

    # From a file; an existing database there is refused without --force, like on the target's server.
    password_file = tmp_path / "restorer.password"
    password_file.write_text(password + "\n")
    again = run_cli(policy, "restore", "app", "--into", "recovered", "--dsn", dsn, "--password-file", str(password_file))
    assert again.returncode == 1 and "already exists" in again.stderr
    other = run_cli(policy, "restore", "app", "--into", "recovered2", "--dsn", dsn, "--password-file",
                    str(password_file), "--no-owner")  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert f"{RESTORER}@127.0.0.1:{cluster.port}/recovered2" in other.stdout

    # A password in the URL would be in the process list: refused, and not echoed.
    secret = "s3cret-" + secrets.token_hex(4)
    leaky = run_cli(policy, "restore", "app", "--into", "x", "--dsn", f"postgresql://{RESTORER}:{secret}@127.0.0.1/postgres")
    assert leaky.returncode == 2 and "must not contain a password" in leaky.stderr and secret not in leaky.stderr
    wrong = run_cli(policy, "restore", "app", "--into", "x", "--dsn", dsn, PGPASSWORD="wrong-" + secret)
    assert wrong.returncode == 1 and "cannot connect" in wrong.stderr and secret not in wrong.stderr
    alone = run_cli(policy, "restore", "app", "--into", "x", "--password-file", str(password_file))
    assert alone.returncode == 2 and "--password-file goes with --dsn" in alone.stderr
    for name in ("recovered", "recovered2"):
        cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_drill_runs_on_the_server_dsn_names(
    pg: Postgres, database: str, make_policy: PolicyFactory, second_server: tuple[ThrowawayCluster, str]
) -> None:
    cluster, password = second_server
    policy = make_policy(database)
    backup_id = backup(policy)
    before = set(cluster.psql("SELECT datname FROM pg_database").split())
    result = run_cli(policy, "drill", "app", "--dsn", cluster.dsn("postgres", RESTORER), "--json", PGPASSWORD=password)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["backup_id"] == backup_id and report["mode"] == "server"
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["row counts"]["ok"] and "5 tables" in checks["row counts"]["observed"]
    # Its scratch database was on that server, and is gone again.
    assert set(cluster.psql("SELECT datname FROM pg_database").split()) == before
    alone = run_cli(policy, "drill", "app", "--password-file", "/nonexistent")
    assert alone.returncode == 2 and "--password-file goes with --dsn" in alone.stderr


def pg_dump(pg: Postgres, database: str, out: Path, *args: str) -> Path:
    env = {"PGPASSWORD": pg.password, "PATH": "/usr/bin:/bin"}
    argv = [str(pg.cluster.bin_dir / "pg_dump"), f"--dbname={pg.dsn(database)}", f"--file={out}", *args]
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return out


@pytest.mark.parametrize(
    ("name", "dump_args", "compress"),
    [
        ("plain.sql", ["--format=plain"], None),
        ("plain.sql.gz", ["--format=plain"], ["gzip", "-c"]),
        ("dump.backup", ["--format=custom"], None),  # a name that says nothing: the content decides
        ("custom.pgc.zst", ["--format=custom", "--compress=0"], ["zstd", "-q", "-c"]),
        ("archive.tar", ["--format=tar"], None),
        ("dir", ["--format=directory"], None),
    ],
)
def test_file_restores_every_dump_format_by_its_content(
    pg: Postgres,
    database: str,
    make_policy: PolicyFactory,
    dropper: Callable[[str], str],
    tmp_path: Path,
    name: str,
    dump_args: list[str],
    compress: list[str] | None,
) -> None:
    policy = make_policy(database)
    raw = pg_dump(pg, database, tmp_path / ("raw-" + name), *dump_args)
    dump = raw
    if compress is not None:
        dump = tmp_path / name
        with dump.open("wb") as out:
            subprocess.run([*compress, str(raw)], stdout=out, check=True)

    checked = run_cli(policy, "restore", "app", "--file", str(dump), "--validate-only", "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert "no manifest" in report["checked"]
    assert ("plain SQL" if "plain" in name else "pg_dump") in report["format"]
    assert (compress is None) == ("compressed" not in report["format"])

    into = dropper(f"{database}_file")
    result = run_cli(policy, "restore", "app", "--file", str(dump), "--into", into)
    assert result.returncode == 0, result.stderr
    assert "row counts were not checked" in result.stdout and f"/{into}" in result.stdout
    assert checksums(pg, into) == checksums(pg, database)


def test_file_that_is_no_dump_or_switches_databases_is_refused_before_anything_is_created(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    policy = make_policy(database)
    before = pg.psql("SELECT count(*) FROM pg_database")
    script = tmp_path / "all.sql"
    script.write_text("CREATE TABLE a(i int);\n\\connect postgres\nDROP TABLE IF EXISTS important;\n")
    refused = run_cli(policy, "restore", "app", "--file", str(script), "--into", "never_made")
    assert refused.returncode == 1 and "switches databases" in refused.stderr
    noise = tmp_path / "noise.bin"
    noise.write_bytes(bytes(range(256)) * 64)
    garbage = run_cli(policy, "restore", "app", "--file", str(noise), "--into", "never_made")
    assert garbage.returncode == 1 and "neither a pg_dump archive" in garbage.stderr
    broken = tmp_path / "broken.sql.zst"
    broken.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(100))
    cut = run_cli(policy, "restore", "app", "--file", str(broken), "--into", "never_made")
    assert cut.returncode == 1 and "cannot be decompressed" in cut.stderr
    failing = tmp_path / "fails.sql"
    failing.write_text("CREATE TABLE kept_out(i int);\nSELECT no_such_function();\n")
    failed = run_cli(policy, "restore", "app", "--file", str(failing), "--into", "never_made")
    assert failed.returncode == 1 and "no_such_function" in failed.stderr
    assert pg.psql("SELECT count(*) FROM pg_database") == before  # no staging database left behind
    both = run_cli(policy, "restore", "app", "--file", str(script), "--before", "2026-01-01", "--into", "x")
    assert both.returncode == 2 and "--file restores that file" in both.stderr


def test_restore_hooks_run_around_the_restore_and_a_failing_pre_hook_touches_nothing(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], tmp_path: Path
) -> None:
    log = tmp_path / "hooks.log"
    record = ["/bin/sh", "-c", f'echo "$DBGUARDIAN_HOOK $DBGUARDIAN_DATABASE $DBGUARDIAN_SOURCE" >> {log}']
    policy = make_policy(database, hooks={"pre_restore": record, "post_restore": record})
    backup_id = backup(policy)
    into = dropper(f"{database}_hooked")
    result = run_cli(policy, "restore", "app", "--into", into)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [f"pre_restore {into} {backup_id}", f"post_restore {into} {backup_id}"]

    # A failing pre_restore hook: the existing database is not replaced (no safety backup, no staging).
    before = pg.psql("SELECT count(*) FROM pg_database")
    checksum = checksums(pg, into)
    failing = make_policy(database, hooks={"pre_restore": ["/bin/sh", "-c", "echo app still running >&2; exit 3"]})
    refused = run_cli(failing, "restore", "app", "--into", into, "--force")
    assert refused.returncode == 1 and "pre_restore hook (/bin/sh) failed" in refused.stderr
    assert "app still running" in refused.stderr
    assert pg.psql("SELECT count(*) FROM pg_database") == before and checksums(pg, into) == checksum
    assert [entry["tier"] for entry in listed(failing, "app")] == ["manual"]  # no safety backup was taken

    slow = make_policy(database, hooks={"pre_restore": ["sleep", "30"], "timeout": "1s"})
    timed_out = run_cli(slow, "restore", "app", "--into", into, "--force")
    assert timed_out.returncode == 1 and "ran over its timeout of 1s" in timed_out.stderr

    after = make_policy(database, hooks={"post_restore": ["false"]})
    done = run_cli(after, "restore", "app", "--into", dropper(f"{database}_hooked2"))
    assert done.returncode == 1 and f"restored {backup_id} into" in done.stderr
    assert "post_restore hook (false)" in done.stderr
    assert checksums(pg, f"{database}_hooked2") == checksums(pg, database)

    bad = make_policy(database, hooks={"pre_restore": "systemctl stop app"})
    refused_policy = run_cli(bad, "check-policy")
    assert refused_policy.returncode == 2 and "hooks" in refused_policy.stderr
