"""A chunk passed on through the write path is not kept alive while the next one is produced.

Each generator in the chain (source -> row counting -> compression -> fan-out) used to keep its last
chunk in a loop variable while it awaited the next: one more 1 MiB chunk alive per layer, at the
moment the reader thread fills the next (issue 14, peak RSS). Chunks here are a bytes subclass that
counts its live instances; the source looks at the count each time it is asked for another chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from dbguardian.pipeline.sink import COALESCE_BELOW, stream_to_storages
from dbguardian.pipeline.stages import Identity
from dbguardian.pipeline.streams import through_stage
from dbguardian.storage.memory import MemoryStorage


class Tracked(bytes):
    alive = 0

    def __new__(cls, data: bytes) -> Tracked:
        Tracked.alive += 1
        return super().__new__(cls, data)

    def __del__(self) -> None:
        Tracked.alive -= 1


class Copying:
    """A stage whose outputs are new objects (as a compressor's are)."""

    pending = False
    quick_feed = True

    def feed(self, chunk: bytes) -> bytes:
        return bytes(chunk)

    def more(self) -> bytes:
        return b""

    def flush(self) -> bytes:
        return b""


async def source(count: int, size: int, seen: list[int]) -> AsyncIterator[bytes]:
    for number in range(count):
        seen.append(Tracked.alive)  # asked for the next chunk: how many earlier ones are still alive
        chunk = Tracked(bytes([number]) * size)
        yield chunk
        del chunk


def test_a_stage_keeps_no_input_alive_while_the_next_is_produced() -> None:
    seen: list[int] = []

    async def run() -> bytes:
        return b"".join([out async for out in through_stage(source(4, 10, seen), Copying())])

    assert asyncio.run(run()) == b"".join(bytes([n]) * 10 for n in range(4))
    assert seen == [0, 0, 0, 0]


def test_the_write_path_keeps_no_written_chunk_alive_while_the_next_is_produced() -> None:
    # Identity passes the chunks themselves on to the fan-out (large enough not to be joined).
    seen: list[int] = []
    size = COALESCE_BELOW + 10
    storages = [MemoryStorage("a"), MemoryStorage("b")]

    async def run() -> None:
        result = await stream_to_storages(source(4, size, seen), storages, "k", compress=Identity())
        assert sorted(result.committed) == ["a", "b"]

    asyncio.run(run())
    assert seen == [0, 0, 0, 0]
    assert all(storage.objects["k"][0] == b"".join(bytes([n]) * size for n in range(4)) for storage in storages)
