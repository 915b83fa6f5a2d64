"""What a backup made by this version writes: a format-2 logical manifest built from catalog.keys,
with the pg_dump version exactly as pg_dump reports it."""

from __future__ import annotations

import asyncio
import json
import subprocess

from dbguardian.catalog import keys
from dbguardian.catalog.manifest import WRITTEN_FORMAT
from dbguardian.postgres import find_tool
from tests.conftest import PolicyFactory, backup_dir
from tests.support.pg import backup


def test_backup_writes_a_logical_manifest_with_the_reported_pg_dump_version(
    database: str, make_policy: PolicyFactory
) -> None:
    policy = make_policy(database, globals=True)
    backup_id = backup(policy)
    root = backup_dir(policy)
    manifest = json.loads((root / keys.manifest_key("app", backup_id)).read_text())
    assert (manifest["format"], manifest["kind"]) == (WRITTEN_FORMAT, "logical")
    assert manifest["objects"]["dump"]["key"] == keys.dump_key("app", backup_id, ".zst")
    assert manifest["objects"]["globals"]["key"] == keys.globals_key("app", backup_id, ".zst")
    assert sorted(path.name for path in (root / "app" / backup_id).iterdir()) == [
        "dump.pgc.zst", "globals.sql.zst", "manifest.json",
    ]  # fmt: skip
    pg_dump = asyncio.run(find_tool("pg_dump", 15))
    reported = subprocess.run([pg_dump.path, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert reported == f"pg_dump (PostgreSQL) {manifest['pg_dump_version']}"
    assert manifest["compression"] == {"algorithm": "zstd", "level": 3} and manifest["encryption"] is None
