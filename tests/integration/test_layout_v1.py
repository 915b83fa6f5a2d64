"""Backups written before the kind-aware catalog (tests/fixtures/layout-v1: manifest format 1, no kind)
still list, verify and restore, with the object keys and counts they recorded."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PolicyFactory, Postgres, backup_dir, run_cli
from tests.support.pg import listed

FIXTURE = Path(__file__).parents[1] / "fixtures" / "layout-v1"
BACKUP_ID = "20261129T233345.263703Z-6b8c"
KEYS = [f"app/{BACKUP_ID}/dump.pgc.zst", f"app/{BACKUP_ID}/globals.sql.zst"]


def legacy_policy(make_policy: PolicyFactory, database: str) -> Path:
    policy = make_policy(database)
    shutil.copytree(FIXTURE / "app", backup_dir(policy) / "app")
    return policy


def test_old_backup_lists(empty_database: str, make_policy: PolicyFactory) -> None:
    policy = legacy_policy(make_policy, empty_database)
    [entry] = listed(policy, "app")
    assert (entry["id"], entry["tier"], entry["kind"], entry["storage"]) == (BACKUP_ID, "daily", "logical", ["local"])
    assert (entry["tables"], entry["rows"], entry["has_globals"]) == (3, 17, True)
    assert entry["compression"] == {"algorithm": "zstd", "level": 3}
    assert entry["sha256"] == "4e689c1d1f6c347aad1237916b9d6ae05661ccc603f868cdf3cd575ae4cc74ed"
    result = run_cli(policy, "list")
    assert result.returncode == 0 and BACKUP_ID in result.stdout


def test_old_backup_verifies(empty_database: str, make_policy: PolicyFactory) -> None:
    policy = legacy_policy(make_policy, empty_database)
    result = run_cli(policy, "verify", "app")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [*(f"ok   local:{key}" for key in KEYS), "2 object(s) verified"]
    result = run_cli(policy, "verify", "app", BACKUP_ID, "--json")
    assert [(check["key"], check["ok"]) for check in json.loads(result.stdout)] == [(key, True) for key in KEYS]


def test_old_backup_restores(
    pg: Postgres, empty_database: str, make_policy: PolicyFactory, dropper: Callable[[str], str]
) -> None:
    policy = legacy_policy(make_policy, empty_database)
    into = dropper(f"{empty_database}_legacy")
    result = run_cli(policy, "restore", "app", "latest", "--into", into, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["backup_id"] == BACKUP_ID
    counts = pg.psql(
        "SELECT (SELECT count(*) FROM shop.customers), (SELECT count(*) FROM shop.orders), (SELECT count(*) FROM notes),"
        " (SELECT sum(total) FROM shop.orders), shop.double(21), (SELECT body FROM notes WHERE id = 2)",
        into,
    )
    assert counts.strip() == "3|12|2|97.50|42|naïve café"
    result = run_cli(policy, "restore", "app", BACKUP_ID, "--validate-only")
    assert result.returncode == 0, result.stderr
