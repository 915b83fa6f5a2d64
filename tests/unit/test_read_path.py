"""pipeline.read against an in-memory storage: checksums, sizes, decompression, spooling."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dbguardian.errors import ChecksumMismatch, PipelineError, UsageError
from dbguardian.pipeline.read import ObjectRef, read_verified, spooled_archive, stored_bytes
from dbguardian.pipeline.stages import compressor, drain
from dbguardian.storage.memory import MemoryStorage

KEY = "app/20250101T000000Z/dump.pgc.zst"
ORIGINAL = b"".join(b"row %d of the archive\n" % n for n in range(200_000))


def packed(algorithm: str = "zstd") -> bytes:
    stage = compressor(algorithm, 3)
    return b"".join(drain(stage, ORIGINAL)) + stage.flush()


def stored(data: bytes) -> tuple[MemoryStorage, ObjectRef]:
    storage = MemoryStorage("local")
    asyncio.run(storage.put_bytes(KEY, data))
    return storage, ObjectRef(KEY, len(data), hashlib.sha256(data).hexdigest())


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


@pytest.mark.parametrize("algorithm", ["zstd", "gzip", "none"])
def test_read_verified_returns_the_original_bytes(algorithm: str) -> None:
    storage, expected = stored(packed(algorithm) if algorithm != "none" else ORIGINAL)
    assert asyncio.run(collect(read_verified(storage, expected, compression=algorithm))) == ORIGINAL


def test_a_changed_object_fails_the_checksum_at_the_end() -> None:
    data = bytearray(ORIGINAL)
    storage, expected = stored(bytes(data))
    data[100] ^= 0x01  # uncompressed: nothing but the checksum can notice
    asyncio.run(storage.put_bytes(KEY, bytes(data)))
    with pytest.raises(ChecksumMismatch, match=f"^local:{KEY}: .* the stored object is corrupt or was changed$"):
        asyncio.run(collect(read_verified(storage, expected, compression="none")))


def test_a_changed_compressed_object_is_named_whichever_stage_notices() -> None:
    data = bytearray(packed())
    storage, expected = stored(bytes(data))
    data[100] ^= 0x01  # inside the first zstd block: decompression fails before the stream ends
    asyncio.run(storage.put_bytes(KEY, bytes(data)))
    with pytest.raises(PipelineError, match=f"^local:{KEY}: corrupt zstd data"):
        asyncio.run(collect(read_verified(storage, expected, compression="zstd")))
    with pytest.raises(ChecksumMismatch, match="corrupt or was changed"):
        asyncio.run(collect(stored_bytes(storage, expected)))


def test_a_grown_object_is_refused_as_soon_as_it_passes_the_expected_size() -> None:
    storage, expected = stored(packed())
    asyncio.run(storage.put_bytes(KEY, packed() + b"\0" * 5_000_000))
    read = 0

    async def scenario() -> None:
        nonlocal read
        async for chunk in stored_bytes(storage, expected):
            read += len(chunk)

    with pytest.raises(ChecksumMismatch, match="larger than the manifest"):
        asyncio.run(scenario())
    assert read <= expected.size_bytes


def test_an_encrypted_object_needs_an_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBGUARDIAN_IDENTITY_FILE", raising=False)
    storage, expected = stored(packed())
    with pytest.raises(UsageError, match="--identity"):
        asyncio.run(collect(read_verified(storage, expected, compression="zstd", encryption="age")))


def test_the_spool_holds_the_original_and_is_removed_on_exit(tmp_path: Path) -> None:
    storage, expected = stored(packed())

    async def scenario() -> Path:
        async with spooled_archive(
            storage, expected, compression="zstd", encryption=None, identity=None, spool_dir=tmp_path / "tmp"
        ) as spool:
            assert spool.read_bytes() == ORIGINAL
            return spool

    spool = asyncio.run(scenario())
    assert not spool.exists() and list((tmp_path / "tmp").iterdir()) == []


def test_the_spool_is_removed_when_the_read_fails(tmp_path: Path) -> None:
    storage, expected = stored(packed())
    asyncio.run(storage.put_bytes(KEY, packed()[:-10] + b"0123456789"))

    async def scenario() -> None:
        async with spooled_archive(
            storage, expected, compression="zstd", encryption=None, identity=None, spool_dir=tmp_path
        ):
            raise AssertionError("a corrupt object must not be handed out")

    with pytest.raises(PipelineError, match=f"^local:{KEY}: "):
        asyncio.run(scenario())
    assert list(tmp_path.iterdir()) == []
