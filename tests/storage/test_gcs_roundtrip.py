"""A backup to Google Cloud Storage (fake-gcs-server) and back, through the CLI, with age encryption."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from dbguardian.storage.gcs.storage import MARKERS
from tests.conftest import PolicyFactory, Postgres, run_cli
from tests.storage.gcs_fixtures import FakeGcs
from tests.support.pg import backup, checksums


def test_backup_to_gcs_restores_identical_data(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], fake_gcs: FakeGcs,
    gcs_bucket: str, tmp_path: Path,
) -> None:  # fmt: skip
    keygen = subprocess.run(["age-keygen", "-o", str(tmp_path / "id.txt")], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.strip().split("Public key: ")[1]
    # A small chunk size, so that even this small dump goes up as a resumable upload of several chunks.
    storage = {"type": "gcs", "bucket": gcs_bucket, "prefix": "dbg", "endpoint_url": fake_gcs.url, "anonymous": True,
               "chunk_size": "256KiB", "storage_class": "NEARLINE"}  # fmt: skip
    policy = make_policy(database, storage=["gcs"], encryption={"method": "age", "recipients": [recipient]},
                         extra={"storage": {"gcs": storage}})  # fmt: skip
    backup_id = backup(policy)
    names = fake_gcs.names(gcs_bucket)
    assert f"dbg/app/{backup_id}/manifest.json" in names
    assert not [name for name in names if MARKERS in name]  # every upload ended: no marker left
    dumps = [name for name in names if name.startswith(f"dbg/app/{backup_id}/") and "manifest" not in name]
    sizes = [int(fake_gcs.object(gcs_bucket, name)["size"]) for name in dumps]
    assert sizes and max(sizes) > 256 * 1024  # the dump took the resumable path (more than one chunk)
    assert run_cli(policy, "verify", "app", "--all").returncode == 0
    into = dropper(f"{database}_gcs")
    result = run_cli(policy, "restore", "app", "--into", into, "--identity", str(tmp_path / "id.txt"))
    assert result.returncode == 0, result.stderr
    assert checksums(pg, into) == checksums(pg, database)
    pruned = run_cli(policy, "prune", "app")
    assert pruned.returncode == 0, pruned.stderr
