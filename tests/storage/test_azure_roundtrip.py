"""A backup to Azure Blob Storage (Azurite) and back, through the CLI, with age encryption."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PolicyFactory, Postgres, run_cli
from tests.storage.azure_fixtures import Azurite
from tests.support.pg import backup, checksums


def test_backup_to_azure_restores_identical_data(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], azurite: Azurite,
    azure_container: str, tmp_path: Path,
) -> None:  # fmt: skip
    # About 3 MB that compression cannot shrink: the dump goes up in several 1 MiB blocks, not one Put Blob.
    pg.psql("CREATE TABLE noise AS SELECT g, decode(string_agg(md5(random()::text || g || h), ''), 'hex') AS b "
            "FROM generate_series(1, 3000) g, generate_series(1, 64) h GROUP BY g; ALTER TABLE noise OWNER TO backup",
            database)  # fmt: skip
    keygen = subprocess.run(["age-keygen", "-o", str(tmp_path / "id.txt")], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.strip().split("Public key: ")[1]
    storage = {"type": "azure", "container": azure_container, "prefix": "dbg", "access_tier": "Cool",
               "connection_string_file": str(azurite.connection_string_file), "block_size": "1MiB"}  # fmt: skip
    policy = make_policy(database, storage=["blob"], encryption={"method": "age", "recipients": [recipient]},
                         extra={"storage": {"blob": storage}})  # fmt: skip
    backup_id = backup(policy)
    container = azurite.client().get_container_client(azure_container)
    names = {item.name: item for item in container.list_blobs(name_starts_with="dbg/")}
    assert f"dbg/app/{backup_id}/manifest.json" in names
    assert all(item.blob_tier == "Cool" for item in names.values())
    dump = next(name for name in names if "/dump" in name)
    committed, _ = container.get_blob_client(dump).get_block_list("committed")
    assert len(committed) >= 3
    assert run_cli(policy, "verify", "app", "--all").returncode == 0
    into = dropper(f"{database}_az")
    result = run_cli(policy, "restore", "app", "--into", into, "--identity", str(tmp_path / "id.txt"))
    assert result.returncode == 0, result.stderr
    assert checksums(pg, into) == checksums(pg, database)
    assert [item.name for item in container.list_blobs(include=["uncommittedblobs"])] == sorted(names)
