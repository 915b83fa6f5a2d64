"""The WAL archive on a storage: ``<target>/wal/<timeline>/<file><suffix>``, listed and looked up.

One object per WAL file (segment, ``.history``, ``.backup`` label, ``.partial``). The suffix says what
was done to the bytes, in order (``.zst`` / ``.gz``, then ``.age`` / ``.gpg``), so a reader needs no
manifest: the WAL shipper writes each file once (conditional put where the backend has it; never over
an existing object), and a storage only ever shows committed objects. Objects whose key does not parse
(temporary uploads, strays) are not WAL and are ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from dbguardian.catalog import keys
from dbguardian.catalog.wal import DEFAULT_SEGMENT_SIZE, classify
from dbguardian.storage import Storage

Compression = Literal["zstd", "gzip", "none"]
EncryptionMethod = Literal["age", "gpg"]

_COMPRESSION_SUFFIX: dict[str, Compression] = {".zst": "zstd", ".gz": "gzip", "": "none"}
_ENCRYPTION_SUFFIX: dict[str, EncryptionMethod | None] = {".age": "age", ".gpg": "gpg", "": None}


@dataclass(frozen=True)
class ArchivedWal:
    """One WAL file as stored."""

    name: str
    """PostgreSQL's file name (``000000010000000A000000FE``, ``00000002.history``, …)."""
    key: str
    suffix: str
    size: int
    modified: datetime
    timeline: int

    @property
    def compression(self) -> Compression:
        return suffix_codec(self.suffix)[0]

    @property
    def encryption(self) -> EncryptionMethod | None:
        return suffix_codec(self.suffix)[1]


def suffix_codec(suffix: str) -> tuple[Compression, EncryptionMethod | None]:
    """``.zst.age`` → (``zstd``, ``age``); raises ValueError for a suffix the shipper never writes."""
    algorithm: Compression = "none"
    rest = suffix
    for compression_suffix, candidate in _COMPRESSION_SUFFIX.items():
        if compression_suffix and suffix.startswith(compression_suffix):
            algorithm, rest = candidate, suffix[len(compression_suffix) :]
            break
    if rest not in _ENCRYPTION_SUFFIX:
        raise ValueError(f"{suffix!r} is not a WAL object suffix")
    return algorithm, _ENCRYPTION_SUFFIX[rest]


def wal_suffix(compression: Compression, encryption: EncryptionMethod | None) -> str:
    """The suffix the shipper gives an object: compression first, then encryption."""
    by_algorithm = {algorithm: suffix for suffix, algorithm in _COMPRESSION_SUFFIX.items()}
    return by_algorithm[compression] + ("" if encryption is None else f".{encryption}")


def _parse(key: str, size: int, modified: datetime, target: str) -> ArchivedWal | None:
    parsed = keys.parse_wal_key(key)
    if parsed is None or parsed.target != target:
        return None
    return ArchivedWal(parsed.file_name, key, parsed.suffix, size, modified, parsed.timeline)


async def list_wal(storage: Storage, target: str, timeline: int | None = None) -> list[ArchivedWal]:
    """Every WAL file of ``target`` on ``storage`` (of one timeline if given), sorted by name.

    If a file was stored twice under different suffixes (the policy's compression changed between two
    attempts), the first by key is kept: both decode to the same WAL file.
    """
    found: dict[str, ArchivedWal] = {}
    for info in await storage.list(keys.wal_prefix(target, timeline)):
        archived = _parse(info.key, info.size, info.modified, target)
        if archived is not None and archived.name not in found:
            found[archived.name] = archived
    return [found[name] for name in sorted(found)]


async def find_wal(storage: Storage, target: str, name: str) -> ArchivedWal | None:
    """The stored object of WAL file ``name`` (any suffix), or None when the storage does not have it."""
    prefix = keys.wal_key(target, name)
    for info in sorted(await storage.list(prefix), key=lambda info: info.key):
        archived = _parse(info.key, info.size, info.modified, target)
        if archived is not None and archived.name == name:
            return archived
    return None


def segment_names(archived: Iterable[ArchivedWal], segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[str]:
    """The names of the complete segments among ``archived`` (no history, backup label or partial)."""
    return [item.name for item in archived if classify(item.name, segment_size).kind == "segment"]


def newest_segment(archived: Iterable[ArchivedWal], segment_size: int = DEFAULT_SEGMENT_SIZE) -> ArchivedWal | None:
    """The complete segment archived last (by modification time; ties by name)."""
    segments = [item for item in archived if classify(item.name, segment_size).kind == "segment"]
    return max(segments, key=lambda item: (item.modified, item.name), default=None)
