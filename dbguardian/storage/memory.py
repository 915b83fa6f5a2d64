"""An in-memory backend: the reference implementation of the contract, for tests and dry runs.

It has nothing that could go stale (a writer keeps its bytes until commit), so it declares no
stale-upload cleanup; listing folders and conditional creates are exact.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.storage.base import READ_CHUNK, Capabilities, ObjectInfo, check_key, folder


class MemoryWriter:
    def __init__(self, storage: MemoryStorage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._parts: list[bytes] = []
        self._done = False

    async def write(self, chunk: bytes) -> None:
        if self._done:
            raise StorageError(f"{self._key}: writer already finished")
        self._parts.append(bytes(chunk))

    async def commit(self) -> ObjectInfo:
        if self._done:
            raise StorageError(f"{self._key}: writer already finished")
        self._done = True
        data = b"".join(self._parts)
        self._storage.objects[self._key] = (data, datetime.now(UTC))
        return ObjectInfo(self._key, len(data), self._storage.objects[self._key][1])

    async def abort(self) -> None:
        self._done = True
        self._parts.clear()


class MemoryStorage:
    capabilities = Capabilities(delimiter_listing=True, conditional_put=True)

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.objects: dict[str, tuple[bytes, datetime]] = {}

    def describe(self) -> str:
        return f"{self.name} (memory)"

    async def open_writer(self, key: str) -> MemoryWriter:
        return MemoryWriter(self, check_key(key))

    async def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        if check_key(key) not in self.objects:
            raise ObjectNotFound(f"{self.name}: no object {key}")
        data = self.objects[key][0]
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return [
            ObjectInfo(key, len(data), modified)
            for key, (data, modified) in sorted(self.objects.items())
            if key.startswith(prefix)
        ]

    async def stat(self, key: str) -> ObjectInfo:
        if check_key(key) not in self.objects:
            raise ObjectNotFound(f"{self.name}: no object {key}")
        data, modified = self.objects[key]
        return ObjectInfo(key, len(data), modified)

    async def delete(self, key: str) -> None:
        self.objects.pop(check_key(key), None)

    async def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> ObjectInfo:
        if if_absent and check_key(key) in self.objects:
            raise ObjectExists(f"{self.name}: an object already exists at {key}")
        writer = await self.open_writer(key)
        await writer.write(data)
        return await writer.commit()

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        base = folder(prefix)
        below = [key[len(base) :] for key in self.objects if key.startswith(base)]
        return sorted({rest.split("/")[0] for rest in below if "/" in rest})

    async def get_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])
