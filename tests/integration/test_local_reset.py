"""`reset-local` and `seed` against a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import PolicyFactory, Postgres, run_cli
from tests.support.pg import backup, checksums


def with_seeds(policy: Path, tmp_path: Path) -> Path:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "light.sql").write_text("INSERT INTO dev_notes(body) SELECT 'note ' || g FROM generate_series(1, 3) g;\n")
    (seeds / "medium.sql").write_text("INSERT INTO dev_notes(body) SELECT 'more ' || g FROM generate_series(1, 40) g;\n")
    (seeds / "broken.sql").write_text("INSERT INTO dev_notes(body) VALUES ('x');\nINSERT INTO nowhere VALUES (1);\n")
    config = yaml.safe_load(policy.read_text())
    config["seed"] = {"profiles": {"light": ["seeds/light.sql"], "medium": ["seeds/light.sql", "seeds/medium.sql"]}}
    policy.write_text(yaml.safe_dump(config, sort_keys=False))
    return seeds


def test_reset_local_from_a_schema_file_with_seeds_and_seed_alone(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    policy = make_policy(database)
    seeds = with_seeds(policy, tmp_path)
    schema = tmp_path / "schema.sql"
    schema.write_text("CREATE TABLE dev_notes (id serial PRIMARY KEY, body text NOT NULL);\n")
    local = "local_dev"
    pg.psql(f"DROP DATABASE IF EXISTS {local}")
    pg.psql(f"CREATE DATABASE {local} OWNER backup")
    pg.psql("CREATE TABLE old_stuff (i int)", local)
    dsn = pg.dsn(local)

    result = run_cli(policy, "reset-local", "--dsn", dsn, "--schema", str(schema), "--seed", "medium", "--yes", "--json",
                     PGPASSWORD=pg.password)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == {"public.dev_notes": 43} and report["replaced_existing"]
    assert pg.psql("SELECT to_regclass('public.old_stuff') IS NULL", local) == "t"  # the old database is gone

    more = run_cli(policy, "seed", "--dsn", dsn, "--profile", "light", PGPASSWORD=pg.password)
    assert more.returncode == 0, more.stderr
    assert "public.dev_notes" in more.stdout and "46 rows" in more.stdout
    # A broken seed file: one transaction, nothing of it stays.
    broken = run_cli(policy, "seed", "--dsn", dsn, "--profile", str(seeds / "broken.sql"), PGPASSWORD=pg.password)
    assert broken.returncode == 1 and "nowhere" in broken.stderr
    assert pg.psql("SELECT count(*) FROM dev_notes", local) == "46"
    # A broken reset leaves the database as it was.
    failed = run_cli(policy, "reset-local", "--dsn", dsn, "--schema", str(schema), "--seed", str(seeds / "broken.sql"),
                     "--yes", PGPASSWORD=pg.password)  # fmt: skip
    assert failed.returncode == 1 and pg.psql("SELECT count(*) FROM dev_notes", local) == "46"
    unknown = run_cli(policy, "seed", "--dsn", dsn, "--profile", "huge", PGPASSWORD=pg.password)
    assert unknown.returncode == 2 and "neither a seed profile (light, medium)" in unknown.stderr
    pg.psql(f"DROP DATABASE {local} WITH (FORCE)")


def test_reset_local_from_a_backup_anonymized_and_refusals(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    policy = make_policy(database)
    backup(policy)
    anonymize = tmp_path / "anonymize.sql"
    anonymize.write_text("UPDATE shop.customers SET name = 'customer ' || id;\n")
    local = "local_from_backup"
    pg.psql(f"DROP DATABASE IF EXISTS {local}")
    result = run_cli(policy, "reset-local", "--dsn", pg.dsn(local), "--from", "app", "--anonymize", str(anonymize),
                     "--yes", PGPASSWORD=pg.password)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "shop.orders" in result.stdout and "10000 rows" in result.stdout
    assert pg.psql("SELECT count(*) FROM shop.customers WHERE name NOT LIKE 'customer %'", local) == "0"
    assert pg.psql("SELECT count(*) FROM shop.orders", local) == pg.psql("SELECT count(*) FROM shop.orders", database)
    untouched = checksums(pg, database)
    pg.psql(f"DROP DATABASE {local} WITH (FORCE)")

    remote = run_cli(policy, "reset-local", "--dsn", "postgresql://me@db.internal/app", "--yes")
    assert remote.returncode == 2 and "not this machine" in remote.stderr and "--i-know-this-is-not-local" in remote.stderr
    unconfirmed = run_cli(policy, "reset-local", "--dsn", pg.dsn(local), "--from", "app")  # stdin is no terminal here
    assert unconfirmed.returncode == 2 and "confirm with --yes" in unconfirmed.stderr
    assert checksums(pg, database) == untouched
