"""One contract, every backend: the checks of dbguardian.storage.conformance, plus local-only behaviour."""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from dbguardian.errors import StorageError
from dbguardian.storage import open_storage
from dbguardian.storage.base import Storage
from dbguardian.storage.conformance import (
    CHECKS,
    ConformanceError,
    StorageFactory,
    read_object,
    run_check,
    run_conformance,
    write_object,
)
from dbguardian.storage.local import LocalStorage
from dbguardian.storage.memory import MemoryStorage
from dbguardian.storage.s3.config import S3StorageConfig
from tests.storage.azure_fixtures import AZURE_PREFIX, AzureFactory
from tests.storage.conftest import PREFIX, MotoServer, S3Factory
from tests.storage.gcs_fixtures import GCS_PREFIX, GcsFactory


@pytest.fixture(params=["local", "memory", "s3", "seaweedfs", "gcs", "azure"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> StorageFactory:
    """Fresh, empty storages of one backend (each call: its own directory or bucket prefix)."""
    if request.param == "local":
        return lambda: LocalStorage("local", tmp_path / f"root-{secrets.token_hex(4)}")
    if request.param == "s3":
        # Moto over real HTTP, a fresh bucket per test (see conftest.py); built the way the policy builds it.
        make_s3: S3Factory = request.getfixturevalue("make_s3")
        return lambda: open_storage("s3", make_s3(prefix=f"{PREFIX}/{secrets.token_hex(4)}").config)
    if request.param == "seaweedfs":
        # SeaweedFS over real HTTP: another S3 implementation than moto, a fresh bucket per storage.
        server: MotoServer = request.getfixturevalue("seaweedfs")
        request.getfixturevalue("s3_env")

        def on_seaweedfs() -> Storage:
            bucket = f"t-{secrets.token_hex(6)}"
            server.client().create_bucket(Bucket=bucket)
            config = {"type": "s3", "bucket": bucket, "prefix": PREFIX, "endpoint_url": server.url,
                      "addressing_style": "path", "access_key_id_file": server.key_files[0],
                      "secret_access_key_file": server.key_files[1], "retries": 1}  # fmt: skip
            return open_storage("s3", S3StorageConfig.model_validate(config))

        return on_seaweedfs
    if request.param == "gcs":
        # fake-gcs-server over real HTTP, a fresh bucket per test (see gcs_fixtures.py); built the way the policy builds it.
        make_gcs: GcsFactory = request.getfixturevalue("make_gcs")
        return lambda: open_storage("gcs", make_gcs(prefix=f"{GCS_PREFIX}/{secrets.token_hex(4)}").config)
    if request.param == "azure":
        # Azurite over real HTTP, a fresh container per test (see azure_fixtures.py); built the way the policy
        # builds it, with the default block size.
        make_azure: AzureFactory = request.getfixturevalue("make_azure")
        return lambda: open_storage(
            "azure", make_azure(prefix=f"{AZURE_PREFIX}/{secrets.token_hex(4)}", block_size="4MiB").config
        )
    return lambda: MemoryStorage("memory")


@pytest.mark.parametrize("check", list(CHECKS))
def test_contract(factory: StorageFactory, check: str) -> None:
    if asyncio.run(run_check(factory, check)) == "skipped":
        pytest.skip(f"{check}: the backend does not declare this ability")


def test_run_conformance_runs_every_check_and_skips_only_undeclared_abilities() -> None:
    results = asyncio.run(run_conformance(lambda: MemoryStorage("memory")))
    assert list(results) == list(CHECKS)
    # memory declares conditional put, not stale-upload cleanup (it has no uploads to go stale)
    assert {name for name, result in results.items() if result == "skipped"} == {"stale_uploads_are_cleaned_up"}


def test_a_false_declaration_fails_conformance() -> None:
    """Declaring an ability is a promise the suite holds the backend to."""

    class Boasting(MemoryStorage):
        capabilities = replace(MemoryStorage.capabilities, stale_upload_cleanup=True)

        async def abort_stale_uploads(self, older_than: datetime) -> list[str]:
            return []

    with pytest.raises(ConformanceError, match=r"^stale_uploads_are_cleaned_up: the stale upload is removed"):
        asyncio.run(run_check(lambda: Boasting("memory"), "stale_uploads_are_cleaned_up"))


def test_registry_declares_what_each_backend_class_declares() -> None:
    from dbguardian.storage.registry import BACKENDS
    from dbguardian.storage.s3.storage import S3Storage

    assert BACKENDS["local"].capabilities == LocalStorage.capabilities
    assert BACKENDS["s3"].capabilities == S3Storage.capabilities


def test_local_leaves_no_empty_directories(tmp_path: Path) -> None:
    storage = LocalStorage("local", tmp_path / "root")

    async def scenario() -> None:
        await storage.put_bytes("t/id/manifest.json", b"{}")
        await storage.delete("t/id/manifest.json")

    asyncio.run(scenario())
    assert list((tmp_path / "root").iterdir()) == []


def test_local_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        storage = LocalStorage("local", mount)

        async def scenario() -> None:
            with pytest.raises(StorageError, match="no space left on device"):
                await write_object(storage, "t/id/dump", [os.urandom(32 * 1024)] * 8)
            assert await storage.list() == []

        asyncio.run(scenario())
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_local_hands_written_data_to_the_disk_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data a window behind the write position is advised out of the cache; the file is still whole."""
    from dbguardian.storage import local

    window = 64 * 1024
    monkeypatch.setattr(local, "WRITEBACK_WINDOW", window)
    advised: list[tuple[int, int]] = []
    real_fadvise = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        advised.append((offset, offset + length))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    storage = LocalStorage("local", tmp_path / "root")
    data = os.urandom(7 * window // 2 + 123)
    chunks = [data[i : i + 10_000] for i in range(0, len(data), 10_000)]

    async def scenario() -> None:
        await write_object(storage, "t/big/dump", chunks)
        assert await read_object(storage, "t/big/dump") == data

    asyncio.run(scenario())
    # Windows 1 and 2 were handed over once written a window past them, each range overlapping the last.
    assert advised == [(0, window), (0, 2 * window)]
