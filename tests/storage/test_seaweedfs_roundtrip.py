"""A backup to SeaweedFS (a second real S3 server) and back, through the CLI, with age encryption."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PolicyFactory, Postgres, run_cli
from tests.storage.conftest import MotoServer
from tests.support.pg import backup, checksums


def test_backup_to_seaweedfs_restores_identical_data(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], seaweedfs: MotoServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    bucket = f"t-{secrets.token_hex(6)}"
    seaweedfs.client().create_bucket(Bucket=bucket)
    keygen = subprocess.run(["age-keygen", "-o", str(tmp_path / "id.txt")], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.strip().split("Public key: ")[1]
    storage = {
        "type": "s3", "bucket": bucket, "prefix": "dbg", "endpoint_url": seaweedfs.url, "addressing_style": "path",
        "access_key_id_file": str(seaweedfs.key_files[0]), "secret_access_key_file": str(seaweedfs.key_files[1]),
    }  # fmt: skip
    policy = make_policy(database, storage=["seaweed"], encryption={"method": "age", "recipients": [recipient]},
                         extra={"storage": {"seaweed": storage}})  # fmt: skip
    backup_id = backup(policy)
    keys = [item["Key"] for item in seaweedfs.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"dbg/app/{backup_id}/manifest.json" in keys
    assert run_cli(policy, "verify", "app", "--all").returncode == 0
    into = dropper(f"{database}_sw")
    result = run_cli(policy, "restore", "app", "--into", into, "--identity", str(tmp_path / "id.txt"))
    assert result.returncode == 0, result.stderr
    assert checksums(pg, into) == checksums(pg, database)
