"""A storage wrapper that records what callers asked of the store underneath (listings, bytes read)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from dbguardian.catalog.keys import parse_backup_key
from dbguardian.storage.base import READ_CHUNK, Capabilities, ObjectInfo, ObjectWriter, Storage


@dataclass
class Spy:
    lists: list[str] = field(default_factory=list)
    dir_lists: list[str] = field(default_factory=list)
    bytes_read: dict[str, int] = field(default_factory=dict)


class SpyStorage:
    """Delegates to ``inner``; ``delimiter_listing`` overrides the capability callers read."""

    def __init__(self, inner: Storage, *, delimiter_listing: bool | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.spy = Spy()
        self.capabilities: Capabilities = inner.capabilities
        if delimiter_listing is not None:
            self.capabilities = replace(inner.capabilities, delimiter_listing=delimiter_listing)

    def describe(self) -> str:
        return self.inner.describe()

    async def open_writer(self, key: str) -> ObjectWriter:
        return await self.inner.open_writer(key)

    async def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        async for chunk in self.inner.read(key, chunk_size):
            self.spy.bytes_read[key] = self.spy.bytes_read.get(key, 0) + len(chunk)
            yield chunk

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        self.spy.lists.append(prefix)
        return await self.inner.list(prefix)

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        self.spy.dir_lists.append(prefix)
        return await self.inner.list_dirs(prefix)

    async def stat(self, key: str) -> ObjectInfo:
        return await self.inner.stat(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> ObjectInfo:
        return await self.inner.put_bytes(key, data, if_absent=if_absent)

    async def get_bytes(self, key: str) -> bytes:
        data = await self.inner.get_bytes(key)
        self.spy.bytes_read[key] = self.spy.bytes_read.get(key, 0) + len(data)
        return data

    def data_bytes_read(self) -> int:
        """Bytes read from backup data objects (not manifests, not the health probe)."""
        return sum(
            size
            for key, size in self.spy.bytes_read.items()
            if (parsed := parse_backup_key(key)) is not None and not parsed.is_manifest
        )
