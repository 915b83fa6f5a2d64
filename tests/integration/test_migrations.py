"""`migrations test` against a real PostgreSQL: up, down, up again, with the schema compared after each step."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import PolicyFactory, Postgres, run_cli
from tests.support.pg import backup

MIGRATIONS = {
    "001_create_tickets": (
        "-- tickets\nCREATE TABLE tickets (id bigint PRIMARY KEY, title text NOT NULL, created_at timestamptz);\n",
        "-- undo tickets\nDROP TABLE IF EXISTS tickets;\n",
    ),
    "002_ticket_created_index": (
        "-- lookups by time\nCREATE INDEX tickets_created_idx ON tickets (created_at);\n",
        "-- undo\nDROP INDEX IF EXISTS tickets_created_idx;\n",
    ),
    "003_add_priority": (
        "-- priorities\nALTER TABLE tickets ADD COLUMN priority int NOT NULL DEFAULT 0;\n",
        "-- undo\nALTER TABLE tickets DROP COLUMN IF EXISTS priority;\n",
    ),
}


def write(directory: Path, migrations: dict[str, tuple[str, str]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for label, (up, down) in migrations.items():
        (directory / f"{label}.up.sql").write_text(up)
        (directory / f"{label}.down.sql").write_text(down)
    return directory


def databases(pg: Postgres) -> set[str]:
    return set(pg.psql("SELECT datname FROM pg_database").split())


def test_a_good_directory_passes_every_step_and_leaves_nothing(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    policy = make_policy(database)
    before = databases(pg)
    result = run_cli(policy, "migrations", "test", str(write(tmp_path / "ok", MIGRATIONS)), "--target", "app", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["base"] == "empty database"
    assert [(step["step"], step["migration"]) for step in report["steps"]] == [
        ("up", "001_create_tickets"), ("up", "002_ticket_created_index"), ("up", "003_add_priority"),
        ("down", "003_add_priority"), ("down", "002_ticket_created_index"), ("down", "001_create_tickets"),
        ("up again", "001_create_tickets"), ("up again", "002_ticket_created_index"), ("up again", "003_add_priority"),
    ]  # fmt: skip
    assert databases(pg) == before


def test_a_down_that_forgets_an_index_fails_naming_it(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    policy = make_policy(database)
    broken = dict(MIGRATIONS)
    broken["002_ticket_created_index"] = (MIGRATIONS["002_ticket_created_index"][0], "-- forgot the index\nSELECT 1;\n")
    before = databases(pg)
    result = run_cli(policy, "migrations", "test", str(write(tmp_path / "bad", broken)), "--target", "app", "--verbose")
    assert result.returncode == 1
    assert "FAIL down     002_ticket_created_index" in result.stdout
    assert "left behind: index tickets_created_idx" in result.stdout
    assert "+CREATE INDEX tickets_created_idx" in result.stdout  # --verbose: the diff
    assert databases(pg) == before  # the scratch database is gone, failure or not

    failing = dict(MIGRATIONS)
    typo = "-- typo\nALTER TABLE tickets ADD COLUMN priority intt;\n"
    failing["003_add_priority"] = (typo, MIGRATIONS["003_add_priority"][1])
    sql_error = run_cli(policy, "migrations", "test", str(write(tmp_path / "typo", failing)), "--target", "app")
    assert sql_error.returncode == 1 and "FAIL up" in sql_error.stdout and "intt" in sql_error.stdout


def test_from_the_latest_backup_and_kept_when_asked(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    policy = make_policy(database)
    backup(policy)
    on_real_data = {
        "001_order_dispatch_note": (
            "-- notes on orders\nALTER TABLE shop.orders ADD COLUMN dispatch_note text;\n"
            "CREATE INDEX orders_dispatch_idx ON shop.orders (dispatch_note);\n",
            "-- undo\nDROP INDEX IF EXISTS shop.orders_dispatch_idx;\n"
            "ALTER TABLE shop.orders DROP COLUMN IF EXISTS dispatch_note;\n",
        )
    }
    directory = write(tmp_path / "real", on_real_data)
    result = run_cli(policy, "migrations", "test", str(directory), "--from-backup", "latest", "--keep", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["base"].startswith("backup ") and report["kept"]
    kept = report["database"]
    assert pg.psql("SELECT count(*) FROM shop.orders", kept) == "10000"  # the backup's data was there
    pg.psql(f'DROP DATABASE "{kept}"')
