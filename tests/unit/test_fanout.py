"""FanOut and stream_to_storages against in-memory storages, one of them failing at a chosen point."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.errors import StorageError, ToolError
from dbguardian.pipeline.sink import COALESCE_BELOW, FanOut, _coalesced, stream_to_storages
from dbguardian.pipeline.stages import Identity, ZstdCompress, compressor, decompressor, drain
from dbguardian.storage.base import READ_CHUNK, ObjectInfo, ObjectWriter
from dbguardian.storage.memory import MemoryStorage

KEY = "app/20250101T000000Z/dump.pgc"
Point = Literal["open", "write", "commit"] | None


class FailingWriter:
    def __init__(self, inner: ObjectWriter, storage: FailingStorage) -> None:
        self._inner = inner
        self._storage = storage
        self.writes = 0

    async def write(self, chunk: bytes) -> None:
        self.writes += 1
        if self._storage.fail_at == "write" and self.writes > self._storage.after_writes:
            raise StorageError(f"{self._storage.name}: disk full")
        await self._inner.write(chunk)

    async def commit(self) -> ObjectInfo:
        if self._storage.fail_at == "commit":
            raise StorageError(f"{self._storage.name}: commit refused")
        return await self._inner.commit()

    async def abort(self) -> None:
        self._storage.aborted += 1
        await self._inner.abort()


class FailingStorage:
    """A MemoryStorage that fails on open, on the write after ``after_writes`` writes, or on commit."""

    capabilities = MemoryStorage.capabilities

    def __init__(self, name: str, fail_at: Point = None, after_writes: int = 0) -> None:
        self.name = name
        self.inner = MemoryStorage(name)
        self.fail_at = fail_at
        self.after_writes = after_writes
        self.opened = 0
        self.aborted = 0

    def describe(self) -> str:
        return f"{self.name} (failing memory)"

    async def open_writer(self, key: str) -> FailingWriter:
        if self.fail_at == "open":
            raise StorageError(f"{self.name}: unreachable")
        self.opened += 1
        return FailingWriter(await self.inner.open_writer(key), self)

    def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        return self.inner.read(key, chunk_size)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return await self.inner.list(prefix)

    async def stat(self, key: str) -> ObjectInfo:
        return await self.inner.stat(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        return await self.inner.put_bytes(key, data)

    async def get_bytes(self, key: str) -> bytes:
        return await self.inner.get_bytes(key)

    @property
    def visible(self) -> bool:
        return KEY in self.inner.objects


CHUNKS = [bytes([n]) * (COALESCE_BELOW + 1000) for n in range(5)]
"""Large enough to reach the storages as five writes (smaller ones are joined: see the last tests)."""
DATA = b"".join(CHUNKS)


async def source(chunks: list[bytes] = CHUNKS) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)


@pytest.mark.parametrize("point", ["open", "write", "commit"])
def test_one_failing_destination_is_dropped_and_the_others_commit(point: Point) -> None:
    good, bad, other = FailingStorage("good"), FailingStorage("bad", point, after_writes=2), FailingStorage("other")

    result = asyncio.run(stream_to_storages(source(), [good, bad, other], KEY, compress=Identity()))

    assert result.committed == ["good", "other"]
    assert list(result.failures) == ["bad"] and "bad" in result.failures["bad"]
    assert good.inner.objects[KEY][0] == DATA and other.inner.objects[KEY][0] == DATA
    assert not bad.visible
    assert bad.aborted == (0 if point == "open" else 1) and good.aborted == other.aborted == 0
    assert result.written.key == KEY and result.written.size_bytes == result.written.raw_size_bytes == len(DATA)
    assert result.written.sha256 == hashlib.sha256(DATA).hexdigest()
    assert result.encryption is None


@pytest.mark.parametrize("points", [("open", "write"), ("write", "commit"), ("commit", "commit")])
def test_every_destination_failing_fails_the_stream(points: tuple[Point, Point]) -> None:
    first, second = FailingStorage("first", points[0], after_writes=1), FailingStorage("second", points[1], after_writes=3)

    with pytest.raises(StorageError, match="every storage failed") as raised:
        asyncio.run(stream_to_storages(source(), [first, second], KEY, compress=Identity()))

    assert "first" in str(raised.value) and "second" in str(raised.value)
    assert not first.visible and not second.visible


def test_cancellation_aborts_every_writer_and_nothing_is_visible() -> None:
    storages = [FailingStorage("a"), FailingStorage("b")]
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        yield b"first chunk"
        started.set()
        await asyncio.Event().wait()  # a producer that never finishes
        yield b"never"

    async def scenario() -> None:
        task = asyncio.create_task(stream_to_storages(endless(), storages, KEY, compress=Identity()))
        await started.wait()
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert [s.opened for s in storages] == [1, 1] and [s.aborted for s in storages] == [1, 1]
    assert not any(s.visible for s in storages)


def test_a_failed_source_commits_nothing() -> None:
    storages = [FailingStorage("a"), FailingStorage("b")]

    async def producer_failed() -> None:
        raise ToolError("pg_dump exited with code 1: connection lost")

    with pytest.raises(ToolError, match="pg_dump"):
        asyncio.run(stream_to_storages(source(), storages, KEY, compress=Identity(), source_succeeded=producer_failed))
    assert [s.aborted for s in storages] == [1, 1] and not any(s.visible for s in storages)


def test_a_source_that_breaks_mid_stream_commits_nothing() -> None:
    storages = [FailingStorage("a"), FailingStorage("b")]

    async def breaking() -> AsyncIterator[bytes]:
        yield b"some bytes"
        raise ToolError("reading the output of pg_dump failed")

    with pytest.raises(ToolError):
        asyncio.run(stream_to_storages(breaking(), storages, KEY, compress=Identity()))
    assert [s.aborted for s in storages] == [1, 1] and not any(s.visible for s in storages)


def test_stages_run_in_order_and_the_result_describes_the_stored_bytes() -> None:
    storage = FailingStorage("local")
    result = asyncio.run(stream_to_storages(source(), [storage], KEY, compress=compressor("gzip", 6)))

    stored = storage.inner.objects[KEY][0]
    decoder = decompressor("gzip")
    assert b"".join(drain(decoder, stored)) + decoder.flush() == DATA
    assert result.written.size_bytes == len(stored) < result.written.raw_size_bytes == len(DATA)
    assert result.written.sha256 == hashlib.sha256(stored).hexdigest()


def test_fanout_used_directly_drops_a_failing_writer() -> None:
    good, bad = FailingStorage("good"), FailingStorage("bad", "write", after_writes=1)

    async def scenario() -> list[str]:
        fanout = FanOut(KEY)
        await fanout.open([good, bad])
        for chunk in CHUNKS:
            await fanout.write(chunk)
        assert list(fanout.live) == ["good"] and "disk full" in fanout.failures["bad"]
        return await fanout.commit()

    assert asyncio.run(scenario()) == ["good"]
    assert good.inner.objects[KEY][0] == DATA and not bad.visible and bad.aborted == 1


def test_fanout_abort_leaves_nothing() -> None:
    storages = [FailingStorage("a"), FailingStorage("b")]

    async def scenario() -> None:
        fanout = FanOut(KEY)
        await fanout.open(storages)
        await fanout.write(b"partial")
        await fanout.abort()
        assert not fanout.live

    asyncio.run(scenario())
    assert [s.aborted for s in storages] == [1, 1] and not any(s.visible for s in storages)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(min_value=1, max_value=100))
def test_coalescing_keeps_every_byte_in_order_and_joins_only_small_outputs(pieces: list[bytes], at_least: int) -> None:
    async def source() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def collect() -> list[bytes]:
        return [chunk async for chunk in _coalesced(source(), at_least)]

    out = asyncio.run(collect())
    assert b"".join(out) == b"".join(pieces)
    # Every output but the last reached the threshold; a join stops as soon as it does (so it is less
    # than the threshold plus one piece), and a piece of the threshold or more passes alone.
    assert all(len(chunk) >= at_least for chunk in out[:-1])
    assert all(len(chunk) < at_least + 40 or chunk in pieces for chunk in out)
    assert len(out) <= len(pieces)


def test_small_compressed_outputs_reach_the_storage_as_few_writes() -> None:
    # 64 MiB of very compressible data in 1 MiB chunks: zstd with workers emits one small output per
    # job (64 here); the storage must see a few writes, not one per job.
    opened: list[FailingWriter] = []

    class CountingStorage(FailingStorage):
        async def open_writer(self, key: str) -> FailingWriter:
            writer = await super().open_writer(key)
            opened.append(writer)
            return writer

    chunk = b"".join(b"%08d,some row text\n" % i for i in range(40_000))[: 1 << 20]

    async def source() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield chunk

    storage = CountingStorage("local")
    result = asyncio.run(stream_to_storages(source(), [storage], KEY, compress=ZstdCompress(3, threads=2)))
    stored = storage.inner.objects[KEY][0]
    decoder = decompressor("zstd")
    assert b"".join(drain(decoder, stored)) + decoder.flush() == chunk * 64
    assert result.written.size_bytes == len(stored)
    assert 1 <= opened[0].writes <= 3, opened[0].writes
