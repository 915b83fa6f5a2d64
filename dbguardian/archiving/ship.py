"""The WAL shipper: every finished file in a target's spool, compressed and encrypted, onto every storage.

One pass (:func:`ship_spool`) looks at the spool once, in name order (which puts a timeline's
``.history`` file before its first segment and a ``.backup`` label right after the segment it names).
For each file and each storage:

1. the exact key (``keys.wal_key`` with the suffix of the target's compression and encryption) is
   looked up; an object there is checked against the spool file (below) instead of being written again;
2. otherwise the file is read once, compressed and encrypted into memory (at most one encoded file per
   file in flight: ``wal.parallel`` files at once) and created with ``put_bytes(..., if_absent=True)``
   on every storage that lacks it. That write is atomic on every backend (local: a fsynced temp file
   ``.<name>.tmp-…`` linked to its final name, which ``parse_wal_key`` never takes for WAL; S3: a single
   PutObject with ``If-None-Match: *``), so a write cut short by a crash or a kill leaves nothing under the
   key and the next pass writes it again: a half-written object is never listed as present;
3. the spool file is removed (and the spool directory fsynced) only when every storage of the target
   has it. A storage that fails keeps the file in the spool; nothing is ever dropped.

WAL is never overwritten. An object found under the key must hold the spool file's bytes: it is
decoded (decrypted when an identity is at hand, ``DBGUARDIAN_IDENTITY_FILE``; decompressed) and its
sha256 compared with the file's. When the shipper cannot decrypt (it normally holds public keys only),
the stored size is compared with the size of this shipper's own encoding of the file: compression is
deterministic for the same settings and age/gpg add a fixed overhead for the same recipients, so an
object written by an earlier attempt of this shipper matches and a different WAL file almost never
does. A mismatch is a *conflict*: reported (alert-worthy), the spool file kept, nothing written.

Passes are idempotent and may run concurrently (the daemon's shipper and ``restore-point --wait``):
the conditional create decides races, and a spool file removed by the other pass was on every storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dbguardian.backup.codec import compression_stage, encryption_stage
from dbguardian.catalog import keys
from dbguardian.catalog.archive import wal_suffix
from dbguardian.errors import ObjectExists, ObjectNotFound, OperationError, StorageError
from dbguardian.files import fsync_dir
from dbguardian.logs import get_logger
from dbguardian.pipeline.encrypt import IDENTITY_ENV, decrypt_stream
from dbguardian.pipeline.stages import decompressor
from dbguardian.pipeline.streams import through_stage
from dbguardian.policy import Policy, TargetConfig
from dbguardian.spool import is_wal_file_name
from dbguardian.storage import Storage, target_storages

log = get_logger("dbguardian.archiving.ship")

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SpoolFile:
    name: str
    size: int
    mtime: float


@dataclass
class ShipReport:
    shipped: list[str] = field(default_factory=list)
    """WAL file names now on every storage of the target (and removed from the spool)."""
    waiting: list[str] = field(default_factory=list)
    """Still in the spool (some storage failed, or the pass was stopped before reaching them)."""
    failures: dict[str, str] = field(default_factory=dict)
    """Storage name → its last error in this pass."""
    conflicts: dict[str, str] = field(default_factory=dict)
    """WAL file name → why the object stored under its key is not this file (kept in the spool, nothing
    written; not in ``failures``: the storage itself works)."""
    written: dict[str, int] = field(default_factory=dict)
    """Storage name → objects this pass created there (for ``wal_segments_shipped``)."""
    failure_counts: dict[str, int] = field(default_factory=dict)
    """Storage name → failed attempts in this pass (for ``wal_ship_failures``)."""
    last_written: dict[str, float] = field(default_factory=dict)
    """Storage name → when (epoch seconds) this pass last wrote there (``wal_last_archived``)."""
    durations: list[float] = field(default_factory=list)
    """Seconds per file shipped to every storage (``wal_ship_duration``)."""
    spool_files: int = 0
    spool_bytes: int = 0
    """What is left in the spool after the pass (the spool gauges)."""
    attempted: list[str] = field(default_factory=list)
    """The storages this pass tried."""


# ----------------------------------------------------------------------------- pure parts


def ship_order(names: Collection[str], until: str | None = None) -> list[str]:
    """The spool entries to ship, in order: WAL file names only (no temp files, no strays), sorted by
    name, and with ``until`` only those sorting at or before it."""
    chosen = sorted(name for name in names if is_wal_file_name(name))
    return chosen if until is None else [name for name in chosen if name <= until]


def missing_storages(wanted: Sequence[str], present: Collection[str]) -> list[str]:
    """The storages (of ``wanted``, in order) that do not have the file yet."""
    return [name for name in wanted if name not in present]


def removable(all_storages: Collection[str], present: Collection[str]) -> bool:
    """A spool file may go only once every storage of the target has it."""
    return bool(all_storages) and all(name in present for name in all_storages)


# ----------------------------------------------------------------------------- I/O


def scan_spool(spool: Path) -> list[SpoolFile]:
    """The WAL files in the spool with their sizes (a missing spool is empty: nothing was archived yet)."""
    found: list[SpoolFile] = []
    try:
        entries = list(os.scandir(spool))
    except FileNotFoundError:
        return found
    except OSError as error:
        raise OperationError(f"cannot read the WAL spool {spool}: {error.strerror or error}") from None
    for entry in entries:
        if not is_wal_file_name(entry.name):
            continue
        with contextlib.suppress(FileNotFoundError):  # shipped by a concurrent pass meanwhile
            stat = entry.stat(follow_symlinks=False)
            found.append(SpoolFile(entry.name, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda item: item.name)


async def _file_chunks(path: Path, digest: hashlib._Hash) -> AsyncIterator[bytes]:
    """The file in ``CHUNK`` pieces, read off the event loop, each added to ``digest``."""
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            digest.update(chunk)
            yield chunk


async def encode_file(path: Path, target: TargetConfig) -> tuple[bytes, str]:
    """The stored form of a WAL file (compressed with ``wal.compression``, then encrypted with
    ``encryption``) and the sha256 of the file, in one streamed pass: only the stored form is held
    (a 16 MB segment is a few MB once compressed), never the whole file."""
    assert target.wal is not None
    digest = hashlib.sha256()
    stream = through_stage(_file_chunks(path, digest), compression_stage(target.wal.compression))
    encryption = encryption_stage(target.encryption)
    if encryption is not None:
        stream = encryption.apply(stream)
    stored = b"".join([chunk async for chunk in stream])
    return stored, digest.hexdigest()


async def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    async for _chunk in _file_chunks(path, digest):
        pass
    return digest.hexdigest()


def object_suffix(target: TargetConfig) -> str:
    assert target.wal is not None
    return wal_suffix(target.wal.compression.algorithm, None if target.encryption is None else target.encryption.method)


async def stored_sha256(storage: Storage, key: str, compression: str, encryption: str | None, identity: Path) -> str:
    """sha256 of what a stored WAL object decodes to."""
    stream: AsyncIterator[bytes] = storage.read(key)
    if encryption is not None:
        stream = decrypt_stream(encryption, identity, stream)
    digest = hashlib.sha256()
    async for chunk in through_stage(stream, decompressor(compression)):
        digest.update(chunk)
    return digest.hexdigest()


class _Encoded:
    """The file's sha256 and stored form, made once per file and only when needed."""

    def __init__(self, path: Path, target: TargetConfig) -> None:
        self.path = path
        self.target = target
        self._sha256: str | None = None
        self._stored: bytes | None = None

    async def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = await file_sha256(self.path)
        return self._sha256

    async def stored(self) -> bytes:
        if self._stored is None:
            self._stored, self._sha256 = await encode_file(self.path, self.target)
        return self._stored


async def _same_content(storage: Storage, key: str, stored_size: int, file: _Encoded) -> str | None:
    """None when the object under ``key`` holds the spool file's bytes; else why not (a conflict)."""
    target = file.target
    assert target.wal is not None
    encryption = None if target.encryption is None else target.encryption.method
    identity = os.environ.get(IDENTITY_ENV)
    if encryption is None or identity:
        sha = await file.sha256()
        try:
            theirs = await stored_sha256(
                storage, key, target.wal.compression.algorithm, encryption, Path(identity) if identity else Path()
            )
        except StorageError:
            raise
        except OperationError as error:  # undecodable: not a WAL file this shipper wrote
            return f"the object cannot be decoded ({error})"
        return (
            None if theirs == sha else f"it decodes to different content (sha256 {theirs[:16]}…, the spool file {sha[:16]}…)"
        )
    ours = len(await file.stored())
    if ours == stored_size:
        return None
    return f"it is {stored_size} bytes, this file encodes to {ours} (encrypted: compared by size)"


async def _ship_file(
    target_name: str,
    target: TargetConfig,
    spool: Path,
    item: SpoolFile,
    storages: Sequence[Storage],
    all_names: Sequence[str],
    present: set[tuple[str, str]],
    report: ShipReport,
) -> None:
    started = time.monotonic()
    key = keys.wal_key(target_name, item.name, object_suffix(target))
    path = spool / item.name
    file = _Encoded(path, target)
    try:
        for storage in storages:
            if (storage.name, item.name) in present:
                continue
            try:
                written = await _ship_to(storage, key, file)
            except _Conflict as conflict:
                report.conflicts[item.name] = f"{storage.name}:{key}: {conflict}"
                report.failure_counts[storage.name] = report.failure_counts.get(storage.name, 0) + 1
                log.error(
                    "WAL conflict: an object under the key is not this file; kept in the spool, not written",
                    target=target_name,
                    storage=storage.name,
                    file=item.name,
                    key=key,
                    reason=str(conflict),
                )
                continue
            except StorageError as error:
                report.failures[storage.name] = str(error)
                report.failure_counts[storage.name] = report.failure_counts.get(storage.name, 0) + 1
                log.warning("WAL file not shipped; it stays in the spool", target=target_name, storage=storage.name,
                            file=item.name, error=str(error))  # fmt: skip
                continue
            if written:
                report.written[storage.name] = report.written.get(storage.name, 0) + 1
                report.last_written[storage.name] = time.time()
            present.add((storage.name, item.name))
    except FileNotFoundError:
        # A concurrent pass removed it: it did so only once every storage had it.
        report.shipped.append(item.name)
        _forget(present, item.name)
        return
    except OSError as error:
        raise OperationError(f"cannot read {path} from the WAL spool: {error.strerror or error}") from None
    if removable(all_names, {name for name, file_name in present if file_name == item.name}):
        await asyncio.to_thread(_remove, path)
        _forget(present, item.name)
        report.shipped.append(item.name)
        report.durations.append(time.monotonic() - started)
    else:
        report.waiting.append(item.name)


class _Conflict(Exception):
    pass


async def _ship_to(storage: Storage, key: str, file: _Encoded) -> bool:
    """Make sure ``storage`` has the file under ``key``: check what is there, else create it.

    True when it was created now, False when the storage already had it (same content); raises
    :class:`_Conflict` when a different object is there, ``StorageError`` when the storage failed.
    """
    try:
        info = await storage.stat(key)
    except ObjectNotFound:
        info = None
    if info is None:
        data = await file.stored()
        try:
            await storage.put_bytes(key, data, if_absent=storage.capabilities.conditional_put)
            return True
        except ObjectExists:  # a concurrent pass, or our own retried request, got there first
            info = await storage.stat(key)
    problem = await _same_content(storage, key, info.size, file)
    if problem is not None:
        raise _Conflict(problem)
    return False


def _forget(present: set[tuple[str, str]], name: str) -> None:
    for entry in [entry for entry in present if entry[1] == name]:
        present.discard(entry)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error of a task group (an OperationError of one file fails the pass as itself)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


async def ship_spool(
    policy: Policy,
    target_name: str,
    *,
    stop: asyncio.Event | None = None,
    until: str | None = None,
    storages: Collection[str] | None = None,
    present: set[tuple[str, str]] | None = None,
    skip: Collection[str] = (),
) -> ShipReport:
    """One pass over the target's spool: ship every finished file (in name order; with ``until``, only
    files whose name sorts at or before it), ``wal.parallel`` files at once.

    ``storages``: try only these (the others count as not having the files: a storage in backoff keeps
    files in the spool without being asked). ``present``: a cache of ``(storage, file)`` known to be
    stored, kept across passes by the daemon's shipper so that waiting files are not looked up again
    every second; entries leave it with their spool file. ``skip``: file names not to look at in this
    pass (known conflicts, re-checked now and then by the caller); they count as waiting.
    ``stop``: start no new file once set.

    Raises OperationError when the spool cannot be read or a file cannot be encoded (every storage would
    fail alike); storage failures are reported, not raised.
    """
    target = policy.target(target_name)
    if target.wal is None:
        raise OperationError(f"target {target_name!r} has no 'wal:' block")
    spool = target.wal.spool
    all_storages = target_storages(policy, target_name)
    all_names = [storage.name for storage in all_storages]
    chosen = [storage for storage in all_storages if storages is None or storage.name in storages]
    report = ShipReport(attempted=[storage.name for storage in chosen])
    cache = present if present is not None else set()
    files = await asyncio.to_thread(scan_spool, spool)
    by_name = {item.name: item for item in files}
    order = ship_order(by_name, until)
    gate = asyncio.Semaphore(target.wal.parallel)

    async def one(item: SpoolFile) -> None:
        async with gate:
            if (stop is not None and stop.is_set()) or item.name in skip:
                report.waiting.append(item.name)
                return
            await _ship_file(target_name, target, spool, item, chosen, all_names, cache, report)

    try:
        async with asyncio.TaskGroup() as group:
            for name in order:
                group.create_task(one(by_name[name]))
    except BaseExceptionGroup as failures:
        raise _first(failures) from None
    report.shipped.sort()
    report.waiting.sort()
    left = await asyncio.to_thread(scan_spool, spool)
    report.spool_files = len(left)
    report.spool_bytes = sum(item.size for item in left)
    return report
