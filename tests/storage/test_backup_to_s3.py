"""The whole path with S3 over real HTTP (moto's server): backup to local + S3, encrypted, restore from S3."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dbguardian.throwaway import free_port
from tests.conftest import PolicyFactory, Postgres, run_cli
from tests.storage.conftest import MotoServer
from tests.support.pg import checksums, listed


def s3_policy(make_policy: PolicyFactory, database: str, tmp_path: Path, moto: MotoServer, bucket: str,
              endpoint: str | None = None, **target: Any) -> Path:  # fmt: skip
    id_file, secret_file = moto.key_files
    storage = {
        "local": {"type": "local", "path": str(tmp_path / "backups")},
        "offsite": {
            "type": "s3",
            "bucket": bucket,
            "prefix": "dbguardian/prod",
            "endpoint_url": endpoint or moto.url,
            "addressing_style": "path",
            "access_key_id_file": str(id_file),
            "secret_access_key_file": str(secret_file),
            "part_size": "5MB",
            "retries": 1,
        },
    }
    return make_policy(database, storage=["local", "offsite"], extra={"storage": storage}, **target)


def test_encrypted_backup_to_local_and_s3_restores_from_s3(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], tmp_path: Path,
    moto_server: MotoServer, s3_bucket: str,
) -> None:  # fmt: skip
    keygen = subprocess.run(["age-keygen", "-o", str(tmp_path / "id.txt")], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.strip().split("Public key: ")[1]
    policy = s3_policy(make_policy, database, tmp_path, moto_server, s3_bucket,
                       encryption={"method": "age", "recipients": [recipient]})  # fmt: skip
    result = run_cli(policy, "backup", "app")
    assert result.returncode == 0, result.stderr
    backup_id = result.stdout.strip().splitlines()[-1]
    [entry] = listed(policy)
    assert entry["id"] == backup_id and entry["storage"] == ["local", "offsite"]
    keys = sorted(item["Key"] for item in moto_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys == [f"dbguardian/prod/app/{backup_id}/dump.pgc.zst.age", f"dbguardian/prod/app/{backup_id}/manifest.json"]
    assert moto_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []

    result = run_cli(policy, "restore", "app", "latest", "--validate-only", "--from", "offsite",
                     "--identity", str(tmp_path / "id.txt"), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["storage"] == "offsite" and json.loads(result.stdout)["toc_entries"] > 30

    into = dropper(f"{database}_s3")
    result = run_cli(policy, "restore", "app", "latest", "--into", into, "--from", "offsite",
                     "--identity", str(tmp_path / "id.txt"), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["storage"] == "offsite"
    assert checksums(pg, into) == checksums(pg, database)

    result = run_cli(policy, "check", "app", "--json")
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["storage_unreachable"]["ok"] and checks["integrity"]["ok"], checks


def test_unreachable_s3_fails_that_destination_only(
    database: str, make_policy: PolicyFactory, tmp_path: Path, moto_server: MotoServer, s3_bucket: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    policy = s3_policy(make_policy, database, tmp_path, moto_server, s3_bucket, endpoint=dead)
    result = run_cli(policy, "backup", "app")
    assert result.returncode == 1
    assert "is valid on local but failed on offsite" in result.stderr
    [entry] = listed(policy)
    assert entry["storage"] == ["local"]
    result = run_cli(policy, "check", "app")
    assert result.returncode == 1 and "FAIL app          storage_unreachable    offsite:" in result.stdout
