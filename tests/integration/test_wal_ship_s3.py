"""The shipper and wal-fetch with an S3 storage (a moto server over real HTTP): down, then back, nothing lost.

The WAL files are made up, 1 MiB segments (``initdb --wal-segsize=1``) with a real long page header, so
moto's in-memory objects stay small.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from dbguardian.archiving.fetch import WalUnavailable, fetch_wal
from dbguardian.archiving.ship import ship_spool
from dbguardian.archiving.status import wal_status
from dbguardian.catalog.archive import list_wal
from dbguardian.catalog.wal import Segment
from dbguardian.policy import Policy, parse_policy
from dbguardian.storage import target_storages
from dbguardian.throwaway import free_port

MiB = 1024 * 1024
KEY_ID = "AKIDDBGUARDIANWALTEST"
SECRET = "dbguardian-wal-test-secret"  # moto accepts any key


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET)  # fmt: skip
    name = f"wal-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name)
    yield name
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def policy(tmp_path: Path, bucket: str, endpoint: str) -> Policy:
    id_file, secret_file = tmp_path / "key_id", tmp_path / "secret"
    id_file.write_text(KEY_ID)
    secret_file.write_text(SECRET)
    s3: dict[str, Any] = {"type": "s3", "bucket": bucket, "prefix": "pitr", "endpoint_url": endpoint,
                          "addressing_style": "path", "access_key_id_file": str(id_file),
                          "secret_access_key_file": str(secret_file), "retries": 0}  # fmt: skip
    return parse_policy(
        {
            "version": 1,
            "state_dir": str(tmp_path / "state"),
            "storage": {"offsite": s3, "local": {"type": "local", "path": str(tmp_path / "local")}},
            "targets": {
                "app": {
                    "dsn": "postgresql://backup@127.0.0.1:5432/app",
                    "storage": ["offsite", "local"],
                    "wal": {"spool": str(tmp_path / "spool"), "compression": {"algorithm": "zstd", "level": 1}},
                }
            },
        }
    )


def segment(number: int) -> tuple[str, bytes]:
    """A 1 MiB WAL segment file: the first page's long header (as PostgreSQL writes it) and filler."""
    name = Segment(1, number).name(MiB)
    head = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, 1, number * MiB, 0, 7_000_000_000_000_000_001, MiB, 8192)
    return name, head + bytes([number % 251]) * (MiB - len(head))


def test_s3_down_keeps_the_spool_then_everything_ships_and_fetches_back(tmp_path: Path, moto_url: str, bucket: str) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    files = dict(segment(number) for number in range(3, 7))
    for name, data in files.items():
        (spool / name).write_bytes(data)

    unreachable = policy(tmp_path, bucket, f"http://127.0.0.1:{free_port()}")
    down = asyncio.run(ship_spool(unreachable, "app"))
    assert down.shipped == [] and down.waiting == sorted(files)
    assert set(down.failures) == {"offsite"} and down.written == {"local": 4}
    assert sorted(path.name for path in spool.iterdir()) == sorted(files)

    # Not on local, and S3 does not answer: that is not "not archived" (exit 1 would end a recovery there).
    with pytest.raises(WalUnavailable, match="could provide it"):
        asyncio.run(fetch_wal(unreachable, "app", "00000002.history", tmp_path / "HISTORY", identity=None))

    live = policy(tmp_path, bucket, moto_url)
    waiting = asyncio.run(wal_status(live, "app", datetime.now(UTC)))  # S3 up, nothing shipped to it yet
    assert waiting.facts.spool.files == 4 and waiting.facts.storages["offsite"].newest_segment is None
    assert {v.check: v.ok for v in waiting.verdicts}["wal_stale"] is False
    back = asyncio.run(ship_spool(live, "app"))
    assert back.shipped == sorted(files) and back.failures == {}
    assert back.written == {"offsite": 4}  # local already had them: nothing twice
    assert list(spool.iterdir()) == []
    status = asyncio.run(wal_status(live, "app", datetime.now(UTC)))
    # "Newest" is by the time an object was stored: files shipped in parallel may land in any order.
    assert {name: s.gap_count for name, s in status.facts.storages.items()} == {"offsite": 0, "local": 0}
    assert all(s.newest_segment in files for s in status.facts.storages.values())
    for storage in target_storages(live, "app"):
        assert [item.name for item in asyncio.run(list_wal(storage, "app"))] == sorted(files)
    assert {v.check: v.ok for v in status.verdicts}["wal_gap"] is True

    # A file already stored (a crash between the write and the spool removal) is recognised by its content.
    name, data = segment(6)
    (spool / name).write_bytes(data)
    again = asyncio.run(ship_spool(live, "app"))
    assert again.shipped == [name] and again.written == {} and again.conflicts == {}

    dest = tmp_path / "RECOVERYXLOG"
    for name, data in files.items():
        assert asyncio.run(fetch_wal(live, "app", name, dest, identity=None)) == "offsite"
        assert dest.read_bytes() == data
