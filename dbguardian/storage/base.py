"""The storage contract every backend implements.

Keys are ``/``-separated relative paths (``app/20261122T020000.000001Z-3fa1/manifest.json``); a key
never starts with ``/`` and never contains ``..`` or empty segments. Backends know nothing about
compression, encryption or manifests: they store bytes.

Contracts (checked by ``tests/storage/test_conformance.py`` for every backend):

- ``open_writer(key)`` returns a writer; nothing is visible under ``key`` until ``commit()`` returns,
  and after ``abort()`` (or a crash) nothing is visible under ``key`` either. ``commit()`` returns only
  once the object is durable. Committing over an existing key replaces it.
- ``read(key)`` yields the object's bytes in order; a missing key raises ``ObjectNotFound`` before
  the first chunk.
- ``list(prefix)`` returns every committed object whose key starts with ``prefix`` (recursively),
  sorted by key; a prefix with nothing under it lists as empty, not an error. In-progress writes
  may appear only under hidden names that contain ``.tmp-``.
- ``stat(key)`` raises ``ObjectNotFound`` for a missing key.
- ``delete(key)`` of a missing key is not an error (deletion is idempotent).
- ``put_bytes`` is an atomic small write, used for manifests: readers see the old object, the new
  one, or none, never a torn one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dbguardian.errors import StorageError

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do natively; callers read these instead of guessing (or probing with getattr)."""

    atomic_rename: bool
    """Whole objects appear atomically by rename (filesystems); object stores commit on upload completion."""
    delimiter_listing: bool = False
    """``list_dirs(prefix)`` answers from the store's own index (S3 CommonPrefixes, a directory read)
    without walking every object below ``prefix``; without it, callers fall back to ``list(prefix)``."""
    stale_upload_cleanup: bool = False
    """``abort_stale_uploads(older_than)`` removes uploads that were started and never committed or aborted
    (S3 multipart uploads keep costing money until aborted; a filesystem's temp files are leftovers too)."""
    conditional_put: bool = False
    """``put_bytes(key, data, if_absent=True)`` creates the object only if no object exists under ``key``,
    atomically (raises ``ObjectExists`` otherwise): never overwrite a manifest or a WAL segment."""


class ObjectWriter(Protocol):
    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> ObjectInfo: ...

    async def abort(self) -> None: ...


class Storage(Protocol):
    name: str
    capabilities: Capabilities

    async def open_writer(self, key: str) -> ObjectWriter: ...

    def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]: ...

    async def list(self, prefix: str = "") -> list[ObjectInfo]: ...

    async def stat(self, key: str) -> ObjectInfo: ...

    async def delete(self, key: str) -> None: ...

    async def put_bytes(self, key: str, data: bytes) -> ObjectInfo: ...

    async def get_bytes(self, key: str) -> bytes: ...

    def describe(self) -> str:
        """Where the objects live, for messages (never with credentials)."""
        ...


def check_key(key: str) -> str:
    """Reject keys that could escape the storage root or alias other keys."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"invalid storage key {key!r}")
    return key
