"""The core path against a real PostgreSQL: backup → list → restore → compare the data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from dbguardian.catalog import LogicalManifest
from tests.conftest import BACKUP_ROLE, PolicyFactory, Postgres, backup_dir, run_cli
from tests.support.majors import lane_major
from tests.support.pg import backup, checksums, listed


def manifest_of(policy: Path, backup_id: str) -> LogicalManifest:
    return LogicalManifest.model_validate_json((backup_dir(policy) / "app" / backup_id / "manifest.json").read_text())


@pytest.mark.parametrize(("algorithm", "suffix"), [("zstd", ".zst"), ("gzip", ".gz")])
def test_round_trip_identical_data(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], algorithm: str, suffix: str
) -> None:
    policy = make_policy(database, compression={"algorithm": algorithm, "level": 3})
    backup_id = backup(policy)

    [entry] = listed(policy, "app")
    assert entry["id"] == backup_id and entry["status"] == "valid" and entry["storage"] == ["local"]
    assert entry["tier"] == "manual" and entry["target"] == "app"
    assert entry["started_at"].endswith("Z") and entry["finished_at"] >= entry["started_at"]
    stored = backup_dir(policy) / "app" / backup_id / f"dump.pgc{suffix}"
    assert entry["size_bytes"] == stored.stat().st_size
    import hashlib

    assert entry["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()

    manifest = manifest_of(policy, backup_id)
    counts = {table.qualified: table.rows for table in manifest.tables}
    assert counts == {
        "audit.blobs": 2, "audit.events": 3000, "public.settings": 3, "shop.customers": 2000, "shop.orders": 10000,
    }  # fmt: skip
    assert manifest.row_counts_from == "dump"  # read off pg_dump's stream, no second scan on the server
    assert manifest.object_counts["views"] == 1 and manifest.object_counts["materialized_views"] == 1
    assert manifest.object_counts["sequences"] == 4 and manifest.object_counts["functions"] == 2
    assert manifest.raw_size_bytes > manifest.size_bytes > 0
    assert manifest.server_version.startswith(f"{lane_major()}.") and manifest.pg_dump_version.startswith(f"{lane_major()}.")
    assert manifest.compression.model_dump() == {"algorithm": algorithm, "level": 3}

    into = dropper(f"{database}_copy")
    result = run_cli(policy, "restore", "app", "latest", "--into", into)
    assert result.returncode == 0, result.stderr
    assert "row counts match the manifest" in result.stdout
    assert checksums(pg, into) == checksums(pg, database)


def test_restore_chosen_id_in_parallel(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], tmp_path: Path
) -> None:
    policy = make_policy(database)
    first = backup(policy)
    before = checksums(pg, database)
    pg.psql("DELETE FROM shop.orders WHERE id > 5000; INSERT INTO public.settings VALUES ('later', 'x')", database)
    second = backup(policy)
    assert [entry["id"] for entry in listed(policy)] == [second, first]  # newest first

    into = dropper(f"{database}_first")
    result = run_cli(policy, "restore", "app", first, "--into", into, "--jobs", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backup_id"] == first and report["mode"] == "file, 2 jobs"
    assert checksums(pg, into) == before
    assert list((tmp_path / "state" / "tmp").iterdir()) == []  # the spooled archive is gone


def test_restore_refuses_existing_database_without_force(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str]
) -> None:
    policy = make_policy(database)
    backup(policy)
    existing = dropper(f"{database}_busy")
    pg.psql(f"CREATE DATABASE {existing}; ")
    pg.psql("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (42)", existing)
    result = run_cli(policy, "restore", "app", "latest", "--into", existing)
    assert result.returncode == 1
    assert f"database '{existing}' already exists; pass --force" in result.stderr
    assert pg.psql("SELECT x FROM keep_me", existing) == "42"


def test_force_takes_safety_backup_then_replaces(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str]
) -> None:
    policy = make_policy(database)
    backup(policy)
    expected = checksums(pg, database)
    # The database is damaged after the backup; restore it in place.
    pg.psql("DELETE FROM shop.orders; DROP TABLE audit.events", database)
    damaged = checksums(pg, database)
    result = run_cli(policy, "restore", "app", "latest", "--into", database, "--force", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["replaced_existing"] is True and report["safety_backup_id"]
    assert checksums(pg, database) == expected

    # The safety backup holds the damaged state and is listed, but "latest" still means a regular backup.
    entries = {entry["id"]: entry for entry in listed(policy)}
    assert entries[report["safety_backup_id"]]["tier"] == "safety"
    undo = dropper(f"{database}_undo")
    result = run_cli(policy, "restore", "app", report["safety_backup_id"], "--into", undo)
    assert result.returncode == 0, result.stderr
    assert checksums(pg, undo) == damaged


def test_validate_only_touches_no_database(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database, globals=True)
    backup_id = backup(policy)
    databases_before = pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database")
    result = run_cli(policy, "restore", "app", backup_id, "--validate-only", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["backup_id"] == backup_id and report["toc_entries"] > 30
    assert pg.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database") == databases_before


@pytest.mark.parametrize("superuser", [True, False])
def test_globals_are_stored_with_the_backup(
    pg: Postgres, database: str, make_policy: PolicyFactory, superuser: bool
) -> None:
    import zstandard

    policy = make_policy(database, globals=True)
    if superuser:
        pg.psql("ALTER ROLE backup SUPERUSER")  # only a superuser may read pg_authid (password hashes)
    try:
        backup_id = backup(policy)
    finally:
        pg.psql("ALTER ROLE backup NOSUPERUSER")
    manifest = manifest_of(policy, backup_id)
    stored = manifest.objects["globals"]
    assert stored.role_passwords is superuser
    text = zstandard.ZstdDecompressor().decompressobj().decompress((backup_dir(policy) / stored.key).read_bytes()).decode()
    assert "CREATE ROLE backup;" in text
    assert ("SCRAM-SHA-256$" in text) is superuser
    assert listed(policy)[0]["has_globals"] is True


def test_tampered_object_fails_checksum(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str]
) -> None:
    # Uncompressed, so only the checksum can notice (corrupt zstd data: tests/unit/test_read_path.py).
    policy = make_policy(database, compression={"algorithm": "none"})
    backup_id = backup(policy)
    dump = backup_dir(policy) / "app" / backup_id / "dump.pgc"
    data = bytearray(dump.read_bytes())
    data[-100] ^= 0x01
    dump.write_bytes(bytes(data))

    result = run_cli(policy, "restore", "app", "latest", "--validate-only")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: local:app/{backup_id}/dump.pgc: ")
    assert error.endswith("the stored object is corrupt or was changed")

    into = f"{database}_never"
    dropper(into)
    result = run_cli(policy, "restore", "app", "latest", "--into", into)
    assert result.returncode == 1
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname LIKE '{into}%'") == "0"


def test_truncated_object_fails_checksum(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database, compression={"algorithm": "none"})
    backup_id = backup(policy)
    dump = backup_dir(policy) / "app" / backup_id / "dump.pgc"
    dump.write_bytes(dump.read_bytes()[:-1000])
    result = run_cli(policy, "restore", "app", backup_id, "--validate-only")
    assert result.returncode == 1
    assert f"local:app/{backup_id}/dump.pgc:" in result.stderr and "the manifest says" in result.stderr


def databases(pg: Postgres) -> set[str]:
    return set(pg.psql("SELECT string_agg(datname, ',') FROM pg_database").split(","))


@pytest.mark.parametrize("field", ["encoding", "lc_collate", "lc_ctype"])
def test_manifest_with_sql_in_its_settings_is_refused(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], field: str
) -> None:
    # A manifest comes from a bucket whose owner may be hostile: CREATE DATABASE must not run what it says.
    policy = make_policy(database)
    backup_id = backup(policy)
    victim = dropper(f"{database}_victim")
    pg.psql(f"CREATE DATABASE {victim}")
    path = backup_dir(policy) / "app" / backup_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest[field] = f"{manifest[field]}'; DROP DATABASE {victim}; --"
    path.write_text(json.dumps(manifest))
    before = databases(pg)
    into = dropper(f"{database}_copy")
    result = run_cli(policy, "restore", "app", "latest", "--into", into)
    assert result.returncode == 1
    reason = "is not a PostgreSQL encoding name" if field == "encoding" else "is not a locale name"
    assert result.stderr.strip().splitlines()[-1] == "error: target 'app' has no valid backup"
    [ignored] = [json.loads(line) for line in result.stderr.splitlines() if "unreadable manifest ignored" in line]
    assert reason in ignored["error"]
    # Asked for by id, the refusal itself is the error.
    result = run_cli(policy, "restore", "app", backup_id, "--into", into)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: backup '{backup_id}' of 'app' cannot be used: ") and reason in error
    assert databases(pg) == before  # the victim is there, and nothing was created (no staging database either)


class Like:
    """What a scratch database copies (a manifest's encoding and locales)."""

    def __init__(self, encoding: str = "UTF8", lc_collate: str = "C.UTF-8", lc_ctype: str = "C.UTF-8") -> None:
        self.encoding, self.lc_collate, self.lc_ctype = encoding, lc_collate, lc_ctype


@pytest.mark.parametrize(
    ("like", "message"),
    [
        (Like(encoding="UTF8'; DROP DATABASE {victim}; --"), "is not a PostgreSQL encoding name"),
        (Like(encoding="NO_SUCH_ENCODING"), "is not a PostgreSQL encoding name"),
        (Like(lc_collate="C'; DROP DATABASE {victim}; --"), "LC_COLLATE"),
        (Like(lc_ctype="C.UTF-8\\'; DROP DATABASE {victim}; --"), "LC_CTYPE"),
    ],
    ids=["sql-in-encoding", "unknown-encoding", "sql-in-collate", "backslash-in-ctype"],
)
def test_scratch_databases_refuse_settings_that_are_not_names(
    pg: Postgres, database: str, dropper: Callable[[str], str], like: Like, message: str
) -> None:
    # Defence in depth: whatever reaches CREATE DATABASE (not only a parsed manifest) is checked and quoted.
    from dbguardian.errors import RestoreRefused
    from dbguardian.postgres import ConnectionInfo
    from dbguardian.scratch import admin_session, scratch_database

    victim = dropper(f"{database}_victim")
    pg.psql(f"CREATE DATABASE {victim}")
    hostile = Like(*(value.format(victim=victim) for value in (like.encoding, like.lc_collate, like.lc_ctype)))
    server = ConnectionInfo(pg.dsn(database), pg.password, database)
    before = databases(pg)

    async def scenario() -> None:
        async with admin_session(server) as admin, scratch_database(admin, server, f"{database}_scratch", hostile):
            raise AssertionError("created")

    with pytest.raises(RestoreRefused, match=f"refusing to create database '{database}_scratch': .*{message}"):
        asyncio.run(scenario())
    assert databases(pg) == before


def test_a_staging_database_that_cannot_be_dropped_is_logged_and_counted(pg: Postgres, database: str) -> None:
    from dbguardian.cleanup import cleanup_failures
    from dbguardian.postgres import ConnectionInfo
    from dbguardian.scratch import admin_session, scratch_database

    server = ConnectionInfo(pg.dsn(database), pg.password, database)
    before = cleanup_failures()["staging_database"]
    name = f"{database}_scratch"

    async def scenario() -> None:
        async with admin_session(server) as admin, scratch_database(admin, server, name, Like()) as scratch:
            assert scratch.name in databases(pg)
            # Someone takes the database away from dbguardian's role: dropping it on the way out fails.
            pg.psql(f"ALTER DATABASE {name} OWNER TO postgres")

    try:
        asyncio.run(scenario())
        assert cleanup_failures()["staging_database"] == before + 1
        assert name in databases(pg)  # left behind, and said so
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_failed_restore_drops_its_staging_database(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str]
) -> None:
    policy = make_policy(database)
    backup_id = backup(policy)
    path = backup_dir(policy) / "app" / backup_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["object_counts"]["views"] += 1
    path.write_text(json.dumps(manifest))
    before = databases(pg)
    into = dropper(f"{database}_copy")
    result = run_cli(policy, "restore", "app", "latest", "--into", into)
    assert result.returncode == 1
    assert "restored data differs from the manifest: views: 1, expected 2" in result.stderr
    assert databases(pg) == before


def test_replacing_a_database_needs_a_safety_backup(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    from dbguardian.errors import RestoreRefused
    from dbguardian.policy import load_policy
    from dbguardian.restore import restore

    policy = make_policy(database)
    backup(policy)
    pg.psql("DELETE FROM public.settings", database)
    before = checksums(pg, database)
    with pytest.raises(RestoreRefused, match="no safety backup can be taken here; not replacing it"):
        asyncio.run(restore(load_policy(policy), "app", "latest", database, force=True))
    assert checksums(pg, database) == before


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_restore_in_two_pg_restore_runs_brings_back_every_kind_of_object(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], jobs: str
) -> None:
    # Restore runs pg_restore for pre-data + data, then for post-data (fed the archive's TOC only) while
    # the rows are counted: what one run would restore must all be there, grants and comments included.
    pg.psql("DO $$BEGIN CREATE ROLE split_reader; EXCEPTION WHEN duplicate_object THEN NULL; END$$")
    pg.psql(
        "CREATE TABLE shop.notes (id int PRIMARY KEY, customer int, body text);"
        "INSERT INTO shop.notes SELECT n, n % 50, 'note ' || n FROM generate_series(1, 500) n;"
        "CREATE INDEX notes_body ON shop.notes (body);"
        "COMMENT ON TABLE shop.notes IS 'notes';"
        "COMMENT ON COLUMN shop.notes.body IS 'the text';"
        "GRANT USAGE ON SCHEMA shop TO split_reader;"
        "GRANT SELECT ON shop.notes TO split_reader;"
        "GRANT SELECT (body) ON shop.notes TO split_reader;"
        f'ALTER DEFAULT PRIVILEGES FOR ROLE "{BACKUP_ROLE}" IN SCHEMA shop GRANT SELECT ON TABLES TO split_reader;'
        "CREATE POLICY own_notes ON shop.notes USING (customer > 0);"
        "ALTER TABLE shop.notes ENABLE ROW LEVEL SECURITY;"
        "CREATE STATISTICS shop.notes_stats ON customer, body FROM shop.notes;"
        "ALTER TABLE shop.notes CLUSTER ON notes_pkey;"
        "CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';"
        "CREATE TRIGGER notes_touch BEFORE UPDATE ON shop.notes FOR EACH ROW EXECUTE FUNCTION shop.touch();"
        "SELECT setval('shop.orders_id_seq', 123456);"
        f'ALTER TABLE shop.notes OWNER TO "{BACKUP_ROLE}";'
        f'ALTER FUNCTION shop.touch() OWNER TO "{BACKUP_ROLE}";'
        f'ALTER STATISTICS shop.notes_stats OWNER TO "{BACKUP_ROLE}";',
        database,
    )
    policy = make_policy(database)
    backup(policy)
    into = dropper(f"{database}_split{jobs}")
    result = run_cli(policy, "restore", "app", "latest", "--into", into, "--jobs", jobs)
    assert result.returncode == 0, result.stderr
    assert checksums(pg, into) == checksums(pg, database)
    config = yaml.safe_load(policy.read_text())
    config["targets"]["copy"] = {**config["targets"]["app"], "dsn": pg.dsn(into)}
    policy.write_text(yaml.safe_dump(config, sort_keys=False))
    same = run_cli(policy, "schema", "diff", "copy", "--against", "app", "--with-privileges")
    assert same.returncode == 0, same.stdout + same.stderr
    assert (
        "GRANT SELECT ON TABLE shop.notes TO split_reader"
        in run_cli(policy, "schema", "dump", "copy", "--with-privileges").stdout
    )
    assert pg.psql("SELECT last_value FROM shop.orders_id_seq", into).strip() == "123456"
    assert pg.psql("SELECT count(*) FROM pg_largeobject_metadata", into) == pg.psql(
        "SELECT count(*) FROM pg_largeobject_metadata", database
    )
