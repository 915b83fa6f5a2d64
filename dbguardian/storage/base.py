"""The storage contract every backend implements.

Keys are ``/``-separated relative paths (``app/20261122T020000.000001Z-3fa1/manifest.json``); a key
never starts with ``/`` and never contains ``..`` or empty segments. Backends know nothing about
compression, encryption or manifests: they store bytes.

Contracts (checked for every backend by :func:`dbguardian.storage.conformance.run_conformance`):

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
  one, or none, never a torn one. With ``if_absent=True`` (backends declaring ``conditional_put``)
  it creates the object only if the key is free, atomically, and raises ``ObjectExists`` otherwise.
- ``list_dirs(prefix)`` returns the names of the "folders" directly below the folder ``prefix``
  (``""`` is the root; ``"app"`` and ``"app/"`` are the same folder), sorted, without the objects at
  that level; a missing prefix lists as empty.

Optional abilities are declared in :class:`Capabilities` and read by callers (never probed with
``getattr``); :func:`stale_upload_cleaner` gives the typed view of one.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, cast

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

    delimiter_listing: bool = False
    """``list_dirs(prefix)`` answers from the store's own index (S3 CommonPrefixes, a directory read)
    without walking every object below ``prefix``; a backend without it may have to walk them."""
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

    async def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> ObjectInfo: ...

    async def list_dirs(self, prefix: str) -> builtins.list[str]: ...

    async def get_bytes(self, key: str) -> bytes: ...

    def describe(self) -> str:
        """Where the objects live, for messages (never with credentials)."""
        ...


class StaleUploadCleanup(Protocol):
    """The optional ability declared by ``Capabilities.stale_upload_cleanup``."""

    async def abort_stale_uploads(self, older_than: datetime) -> list[str]:
        """Remove uploads started before ``older_than`` and never committed or aborted; their keys, sorted."""
        ...


def stale_upload_cleaner(storage: Storage) -> StaleUploadCleanup | None:
    """The storage as a :class:`StaleUploadCleanup` if it declares the ability, else None."""
    return cast(StaleUploadCleanup, storage) if storage.capabilities.stale_upload_cleanup else None


def folder(prefix: str) -> str:
    """``prefix`` as a folder path: ``""`` (the root) or ending with ``/``."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def check_key(key: str) -> str:
    """Reject keys that could escape the storage root or alias other keys."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise StorageError(f"invalid storage key {key!r}")
    return key
