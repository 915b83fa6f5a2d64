"""One contract, every backend (see dbguardian/storage/base.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbguardian.errors import ObjectNotFound, StorageError
from dbguardian.storage import open_storage
from dbguardian.storage.base import Storage
from dbguardian.storage.local import LocalStorage
from dbguardian.storage.memory import MemoryStorage
from tests.storage.conftest import S3Factory


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "local":
        yield LocalStorage("local", tmp_path / "root")
    elif request.param == "s3":
        # Moto over real HTTP, a fresh bucket, keys under "pre/fix/" (see conftest.py); built the way
        # the policy builds it.
        make_s3: S3Factory = request.getfixturevalue("make_s3")
        yield open_storage("s3", make_s3().config)
    else:
        yield MemoryStorage("memory")


async def _write(storage: Storage, key: str, chunks: list[bytes]) -> None:
    writer = await storage.open_writer(key)
    for chunk in chunks:
        await writer.write(chunk)
    await writer.commit()


async def _read(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key, chunk_size=1000)])


def test_streamed_write_then_read(storage: Storage) -> None:
    async def scenario() -> None:
        data = os.urandom(10_000)
        await _write(storage, "t/a/dump", [data[:3000], data[3000:], b""])
        assert await _read(storage, "t/a/dump") == data
        info = await storage.stat("t/a/dump")
        assert (info.key, info.size) == ("t/a/dump", 10_000)

    asyncio.run(scenario())


def test_nothing_visible_before_commit_or_after_abort(storage: Storage) -> None:
    async def scenario() -> None:
        writer = await storage.open_writer("t/b/dump")
        await writer.write(b"partial")
        visible = [info.key for info in await storage.list("t/") if ".tmp-" not in info.key]
        assert visible == []
        with pytest.raises(ObjectNotFound):
            await storage.stat("t/b/dump")
        await writer.abort()
        assert await storage.list("t/") == []

    asyncio.run(scenario())


def test_missing_objects(storage: Storage) -> None:
    async def scenario() -> None:
        with pytest.raises(ObjectNotFound):
            await _read(storage, "nope/x")
        with pytest.raises(ObjectNotFound):
            await storage.stat("nope/x")
        assert await storage.list("nope/") == []
        await storage.delete("nope/x")  # idempotent

    asyncio.run(scenario())


def test_list_is_recursive_sorted_and_prefix_exact(storage: Storage) -> None:
    async def scenario() -> None:
        for key in ["app/2/m", "app/1/m", "app/1/d", "apple/1/m", "other/x"]:
            await storage.put_bytes(key, key.encode())
        assert [info.key for info in await storage.list("app/")] == ["app/1/d", "app/1/m", "app/2/m"]
        assert [info.key for info in await storage.list("app")] == ["app/1/d", "app/1/m", "app/2/m", "apple/1/m"]
        assert len(await storage.list()) == 5

    asyncio.run(scenario())


def test_put_replaces_and_delete_removes(storage: Storage) -> None:
    async def scenario() -> None:
        await storage.put_bytes("k/v", b"one")
        await storage.put_bytes("k/v", b"two")
        assert await storage.get_bytes("k/v") == b"two"
        await storage.delete("k/v")
        with pytest.raises(ObjectNotFound):
            await storage.get_bytes("k/v")
        assert await storage.list("k/") == []

    asyncio.run(scenario())


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/."])
def test_unsafe_keys_rejected(storage: Storage, key: str) -> None:
    async def scenario() -> None:
        with pytest.raises(StorageError, match="invalid storage key"):
            await storage.put_bytes(key, b"x")

    asyncio.run(scenario())


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
                await _write(storage, "t/id/dump", [os.urandom(32 * 1024)] * 8)
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
        await _write(storage, "t/big/dump", chunks)
        assert await _read(storage, "t/big/dump") == data

    asyncio.run(scenario())
    # Windows 1 and 2 were handed over once written a window past them, each range overlapping the last.
    assert advised == [(0, window), (0, 2 * window)]
