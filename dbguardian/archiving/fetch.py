"""``wal-fetch``: one archived WAL file back for PostgreSQL's ``restore_command``.

The file comes from the first storage of the target (in the policy's order) that has it; it is
decrypted (``--identity`` / ``DBGUARDIAN_IDENTITY_FILE``), decompressed, checked, written to a
temporary file next to DEST, fsynced and renamed to DEST, so PostgreSQL never reads a torn file. A
storage that fails is skipped for the next one. No storage has it → :class:`WalNotArchived` (exit 1):
PostgreSQL asks for files that do not exist as part of recovery (the next timeline's history, the
segment after the archive's end) and takes exit 1 as "not there".

Checks of a segment (cheap, from its first page): the long page header's ``xlp_seg_size`` is a valid
segment size and the file is exactly that long, and ``xlp_pageaddr`` is the start LSN the file name
says (a file stored under the wrong name, or truncated, is refused rather than replayed).

Prefetch: a download (a miss) also fetches the next ``prefetch`` segments of the timeline, in
parallel, into ``.dbguardian-prefetch`` (0700) next to DEST (``pg_wal/``); later calls serve from there
(checked again, then renamed: same filesystem) without touching a storage. Recovery thus pays one
round of parallel downloads per ``prefetch + 1`` segments instead of one process and download per
16 MB. Prefetched files of segments recovery has passed are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from dbguardian.catalog import keys
from dbguardian.catalog.archive import ArchivedWal, find_wal, suffix_codec, wal_suffix
from dbguardian.catalog.wal import classify, next_segment_name
from dbguardian.errors import ObjectNotFound, OperationError, PipelineError, StorageError, UsageError
from dbguardian.files import fsync_dir, open_private, private_dirs
from dbguardian.pipeline.encrypt import decrypt_stream, identity_file
from dbguardian.pipeline.stages import decompressor
from dbguardian.pipeline.streams import through_stage
from dbguardian.policy import Policy
from dbguardian.storage import Storage, target_storages
from dbguardian.walfile import LONG_HEADER, prefetch_dir, serve_prefetched
from dbguardian.walfile import PREFETCH_DIR as PREFETCH_DIR
from dbguardian.walfile import check_wal_file as check_wal_file

DEFAULT_PREFETCH = 8
TEMP_MARK = ".tmp-"


class WalNotArchived(OperationError):
    """Every storage of the target answered, and none has the requested WAL file."""


class WalUnavailable(OperationError):
    """The file was not found, but some storage failed (unreachable, corrupt object): it may exist."""


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


async def _locate(storage: Storage, target_name: str, name: str, suffix: str) -> ArchivedWal | None:
    """The object of ``name`` on ``storage``: the key the shipper writes now first (one HEAD), else any suffix."""
    key = keys.wal_key(target_name, name, suffix)
    try:
        info = await storage.stat(key)
    except ObjectNotFound:
        return await find_wal(storage, target_name, name)
    parsed = keys.parse_wal_key(key)
    assert parsed is not None
    return ArchivedWal(name, key, suffix, info.size, info.modified, parsed.timeline)


async def _decoded(storage: Storage, archived: ArchivedWal, identity: Path | None) -> AsyncIterator[bytes]:
    compression, encryption = suffix_codec(archived.suffix)
    stream: AsyncIterator[bytes] = storage.read(archived.key)
    if encryption is not None:
        stream = decrypt_stream(encryption, identity_file(identity), stream)
    async for chunk in through_stage(stream, decompressor(compression)):
        yield chunk


async def _download(storage: Storage, archived: ArchivedWal, name: str, dest: Path, identity: Path | None) -> None:
    """Decode the object into a temp file beside ``dest``, check it, fsync, rename to ``dest``."""
    temp = _temp_beside(dest)
    try:
        size = 0
        head = b""
        with open_private(temp, "wb", exclusive=True) as out:
            async for chunk in _decoded(storage, archived, identity):
                if len(head) < LONG_HEADER.size:
                    head += chunk[: LONG_HEADER.size]
                size += len(chunk)
                await asyncio.to_thread(out.write, chunk)
            check_wal_file(name, head, size)
            out.flush()
            await asyncio.to_thread(os.fsync, out.fileno())
        temp.rename(dest)
        fsync_dir(dest.parent)
    finally:
        temp.unlink(missing_ok=True)


async def fetch_from_storages(
    storages: list[Storage], target_name: str, suffix: str, name: str, dest: Path, identity: Path | None
) -> str:
    problems: list[str] = []
    for storage in storages:
        try:
            archived = await _locate(storage, target_name, name, suffix)
            if archived is None:
                continue
            await _download(storage, archived, name, dest, identity)
            return storage.name
        except (StorageError, PipelineError) as error:
            problems.append(f"{storage.name}: {error}")
    if problems:  # unknown whether it is archived: must not read as the end of the archive
        raise WalUnavailable(f"{name}: no storage of target {target_name!r} could provide it: {'; '.join(problems)}")
    raise WalNotArchived(f"{name} is not archived on any storage of target {target_name!r}")


def stale_prefetched(names: list[str], requested: str) -> list[str]:
    """Prefetched files recovery will not ask for any more: segments of the requested one's timeline that
    sort before it, and leftover temp files."""
    timeline = requested[:8]
    return [name for name in names if TEMP_MARK in name or (len(name) == 24 and name[:8] == timeline and name < requested)]


def _clean_prefetch(directory: Path, requested: str) -> None:
    try:
        names = [entry.name for entry in directory.iterdir()]
    except FileNotFoundError:
        return
    for name in stale_prefetched(names, requested):
        with contextlib.suppress(OSError):
            (directory / name).unlink()


def following(name: str, count: int) -> list[str]:
    """The ``count`` segments after segment ``name`` (16 MiB naming; none after other kinds of files)."""
    if count <= 0 or classify(name).kind != "segment":
        return []
    names: list[str] = []
    current = name
    for _ in range(count):
        current = next_segment_name(current)
        names.append(current)
    return names


async def fetch_wal(
    policy: Policy, target_name: str, name: str, dest: Path, *, identity: Path | None, prefetch: int = 0
) -> str:
    """Write the archived WAL file ``name`` to ``dest`` (atomically); returns the storage it came from
    (``prefetch`` when a prefetched copy was served). Raises :class:`WalNotArchived` when no storage has it.

    ``prefetch``: on a download, also fetch that many following segments into the prefetch directory.
    """
    try:
        classify(name)
    except ValueError as error:
        # PostgreSQL asks for names no archive can hold (00000001.history at the end of every recovery):
        # for those the answer is "not archived", which lets recovery finish.
        raise WalNotArchived(f"{name} is not archived: {error}") from None
    target = policy.target(target_name)
    if target.wal is None:
        raise UsageError(f"target {target_name!r} has no 'wal:' block")
    cache = prefetch_dir(dest)
    await asyncio.to_thread(_clean_prefetch, cache, name)
    if await asyncio.to_thread(serve_prefetched, name, dest):
        return "prefetch"
    storages = target_storages(policy, target_name)
    suffix = wal_suffix(target.wal.compression.algorithm, None if target.encryption is None else target.encryption.method)
    ahead = [item for item in following(name, prefetch) if not (cache / item).exists()]
    if ahead:
        private_dirs(cache)

    async def prefetch_one(item: str) -> None:
        with contextlib.suppress(OperationError):  # only a head start: the real call reports problems
            await fetch_from_storages(storages, target_name, suffix, item, cache / item, identity)

    results = await asyncio.gather(
        fetch_from_storages(storages, target_name, suffix, name, dest, identity),
        *(prefetch_one(item) for item in ahead),
        return_exceptions=True,
    )
    first = results[0]
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result
    if isinstance(first, BaseException):
        raise first
    assert isinstance(first, str)
    return first
