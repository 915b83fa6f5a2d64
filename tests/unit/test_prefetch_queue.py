"""The prefetch queue's fetcher against a local storage: what it answers and what it keeps ahead."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from dbguardian.archiving.prefetch import QueueFetcher
from dbguardian.catalog import keys
from dbguardian.catalog.wal import next_segment_name
from dbguardian.storage import LocalStorage
from dbguardian.walfile import FAILED, NOT_ARCHIVED, segment_start

MiB = 1024 * 1024
FIRST = "000000010000000000000010"


def segment(name: str) -> bytes:
    start = segment_start(name, 16 * MiB)
    assert start is not None
    head = struct.pack("<HHIQI4xQII", 0xD110, 0x0002, 1, start, 0, 7_000_000_000_000_000_000, 16 * MiB, 8192)
    return head + bytes(16 * MiB - len(head))


async def store(storage: LocalStorage, name: str, data: bytes | None = None) -> None:
    await storage.put_bytes(keys.wal_key("app", name), segment(name) if data is None else data)


def names(count: int) -> list[str]:
    found = [FIRST]
    while len(found) < count:
        found.append(next_segment_name(found[-1]))
    return found


async def settle(fetcher: QueueFetcher) -> None:
    await asyncio.gather(*(download.task for download in fetcher.downloads.values()), return_exceptions=True)


def make(tmp_path: Path, storage: LocalStorage, prefetch: int = 2) -> QueueFetcher:
    queue = tmp_path / "pg_wal" / ".dbguardian-prefetch"
    queue.mkdir(parents=True)
    return QueueFetcher([storage], "app", "", queue, identity=None, prefetch=prefetch, parallel=2, key="k")


def test_a_request_is_answered_and_the_next_segments_are_fetched_ahead(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = LocalStorage("local", tmp_path / "backups")
        first, second, third, fourth = names(4)
        for name in (first, second, third):
            await store(storage, name)
        fetcher = make(tmp_path, storage)
        assert await fetcher.answer(first) == (0, "")
        assert (fetcher.queue / first).read_bytes() == segment(first)
        await settle(fetcher)
        assert sorted(path.name for path in fetcher.queue.iterdir()) == [first, second, third]
        (fetcher.queue / first).unlink()  # served (moved to pg_wal by the caller)

        assert await fetcher.answer(second) == (0, "")  # from the queue
        await settle(fetcher)  # the window moved: the fourth was tried, and is missing
        code, message = await fetcher.answer(fourth)
        assert code == NOT_ARCHIVED and fourth in message
        assert not (fetcher.queue / second).exists()  # behind recovery: removed
        assert not (fetcher.queue / third).exists()  # recovery passed it

    asyncio.run(scenario())


def test_missing_while_prefetching_is_asked_again_when_requested(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = LocalStorage("local", tmp_path / "backups")
        first, second = names(2)
        await store(storage, first)
        fetcher = make(tmp_path, storage, prefetch=1)
        assert await fetcher.answer(first) == (0, "")
        await settle(fetcher)
        assert not (fetcher.queue / second).exists()  # not archived yet when it was prefetched
        await store(storage, second)  # archived meanwhile (a standby following a live archive)
        assert await fetcher.answer(second) == (0, "")
        assert (fetcher.queue / second).read_bytes() == segment(second)

    asyncio.run(scenario())


def test_a_bad_object_or_name_is_not_served(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = LocalStorage("local", tmp_path / "backups")
        first, second = names(2)
        await store(storage, first, segment(second))  # another segment under this name
        fetcher = make(tmp_path, storage)
        code, message = await fetcher.answer(first)
        assert code == FAILED and "another segment" in message
        assert not (fetcher.queue / first).exists()
        assert (await fetcher.answer("00000001.history"))[0] == NOT_ARCHIVED
        assert (await fetcher.answer("00000002.history"))[0] == NOT_ARCHIVED
        assert (await fetcher.answer("RECOVERYXLOG"))[0] == NOT_ARCHIVED
        await settle(fetcher)

    asyncio.run(scenario())
