"""The write end of a backup: compress → encrypt (optional) → sha256 → every storage in parallel.

The caller hands in ready-made stages (built from its policy) and gets back what was written (key,
sizes, sha256, encryption info) to record as it sees fit.

One stream feeds several destinations with backpressure (each chunk is written to all live
destinations before the next one is produced, so a slow destination slows the stream and memory
stays flat). A destination that fails is dropped and reported; the others carry on. If every
destination fails, the stream fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dbguardian.errors import StorageError
from dbguardian.logs import get_logger
from dbguardian.pipeline.encrypt import Encryption, EncryptionInfo
from dbguardian.pipeline.stages import Digest, Stage
from dbguardian.pipeline.streams import through_stage
from dbguardian.progress import Progress

log = get_logger("dbguardian.sink")


class ObjectWriter(Protocol):
    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> object: ...

    async def abort(self) -> None: ...


class Destination(Protocol):
    """What the write path needs of a storage."""

    @property
    def name(self) -> str: ...

    async def open_writer(self, key: str) -> ObjectWriter: ...


@dataclass(frozen=True)
class WrittenObject:
    key: str
    size_bytes: int
    """As stored: compressed and encrypted."""
    sha256: str
    """Of the stored bytes."""
    raw_size_bytes: int
    """Of the source stream, before any stage."""


@dataclass
class StreamResult:
    written: WrittenObject
    committed: list[str]
    failures: dict[str, str] = field(default_factory=dict)
    encryption: EncryptionInfo | None = None


class FanOut:
    """Writers for one key on several storages; failures drop a writer, not the stream."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.live: dict[str, ObjectWriter] = {}
        self.failures: dict[str, str] = {}

    async def open(self, storages: Sequence[Destination]) -> None:
        for storage in storages:
            try:
                self.live[storage.name] = await storage.open_writer(self.key)
            except StorageError as error:
                self._failed(storage.name, error)
        self._require_one()

    def _failed(self, name: str, error: BaseException) -> None:
        self.failures[name] = str(error)
        log.error("storage failed; continuing with the others", storage=name, key=self.key, error=str(error))

    def _require_one(self) -> None:
        if not self.live:
            detail = "; ".join(f"{name}: {reason}" for name, reason in self.failures.items())
            raise StorageError(f"every storage failed: {detail}")

    async def _each(self, action: Callable[[ObjectWriter], Awaitable[object]]) -> None:
        names = list(self.live)
        results = await asyncio.gather(*(action(self.live[name]) for name in names), return_exceptions=True)
        for name, result in zip(names, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Exception):
                writer = self.live.pop(name)
                with contextlib.suppress(Exception):
                    await writer.abort()
                self._failed(name, result)
            elif isinstance(result, BaseException):
                raise result
        self._require_one()

    async def write(self, chunk: bytes) -> None:
        await self._each(lambda writer: writer.write(chunk))

    async def commit(self) -> list[str]:
        await self._each(lambda writer: writer.commit())
        return list(self.live)

    async def abort(self) -> None:
        for writer in self.live.values():
            with contextlib.suppress(Exception):
                await writer.abort()
        self.live.clear()


COALESCE_BELOW = 256 * 1024
"""Outputs smaller than this are joined before they are written (see ``_coalesced``)."""


async def _coalesced(chunks: AsyncIterator[bytes], at_least: int = COALESCE_BELOW) -> AsyncIterator[bytes]:
    """``chunks`` in order, small ones joined until they reach ``at_least`` bytes.

    zstd emits one output per finished job: ~10 kB each for a 1 MiB job of pgbench data. Every write
    goes to each storage through a task and a worker thread; joining them makes ~100x fewer writes
    there, and the copy is of small pieces only (outputs of ``at_least`` or more pass as they are).
    """
    held: list[bytes] = []
    size = 0
    async for chunk in chunks:
        if not held and len(chunk) >= at_least:
            yield chunk
            del chunk  # not kept alive while the next one is awaited (see streams.through_stage)
            continue
        held.append(chunk)
        size += len(chunk)
        if size >= at_least:
            yield b"".join(held)
            held.clear()
            size = 0
    if held:
        yield b"".join(held)


@dataclass
class _Tally:
    size: int = 0


async def _counted(chunks: AsyncIterator[bytes], raw: _Tally, progress: Progress | None) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        raw.size += len(chunk)
        if progress is not None:
            progress.advance(len(chunk))
        yield chunk
        del chunk


async def stream_to_storages(
    chunks: AsyncIterator[bytes],
    storages: Sequence[Destination],
    key: str,
    progress: Progress | None = None,
    *,
    compress: Stage,
    encrypt: Encryption | None = None,
    source_succeeded: Callable[[], Awaitable[None]] | None = None,
) -> StreamResult:
    """Write ``chunks`` through ``compress`` and ``encrypt`` to ``key`` on every storage; commit where it worked.

    ``source_succeeded`` is awaited after the last chunk and before the commit; it raises if the
    producer (pg_dump) failed, so a truncated stream is never committed. On any failure or
    cancellation of the stream itself every writer is aborted: no partial object stays visible.
    """
    raw = _Tally()
    stream = through_stage(_counted(chunks, raw, progress), compress)
    if encrypt is not None:
        stream = encrypt.apply(stream)
    digest = Digest()
    fanout = FanOut(key)
    try:
        await fanout.open(storages)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for data in _coalesced(stream):
                digest.update(data)
                await fanout.write(data)
                del data  # written everywhere: not kept alive while the next one is produced
        # End of stream is not success: the producer may have died. Check before anything commits.
        if source_succeeded is not None:
            await source_succeeded()
        committed = await fanout.commit()
    except BaseException:
        await asyncio.shield(fanout.abort())
        raise
    written = WrittenObject(key=key, size_bytes=digest.size, sha256=digest.hexdigest(), raw_size_bytes=raw.size)
    return StreamResult(written, committed, dict(fanout.failures), None if encrypt is None else encrypt.info)
