"""A directory on a local (or mounted) filesystem.

Durability follows the usual recipe: write to a hidden temporary name in the final directory,
fsync the file, rename it over the final name, fsync the directory. A conditional create
(``put_bytes(..., if_absent=True)``) links the temporary file to the final name instead: ``link``
fails if the name exists, atomically, where ``rename`` would replace it.

Permissions: objects are created 0600 and directories 0700 whatever the process umask (a backup
run from an interactive shell or cron, umask 022, must not leave a world-readable dump).

Capabilities: ``list_dirs`` is one directory read (delimiter listing); temporary files left by a
crash (``.<name>.tmp-<pid>-<random>``) are removed by ``abort_stale_uploads`` once older than the
grace (stale-upload cleanup); conditional create by ``link``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.files import fsync_dir, open_private, private_dirs
from dbguardian.logs import get_logger
from dbguardian.policy.base import AbsolutePath
from dbguardian.policy.storage import StorageConfigBase
from dbguardian.storage.base import READ_CHUNK, Capabilities, ObjectInfo, check_key

log = get_logger("dbguardian.storage.local")

TEMP_MARK = ".tmp-"
# Written data older than this is handed to the disk early and dropped from the page cache (see
# LocalWriter._write_sync).
WRITEBACK_WINDOW = 16 * 1024 * 1024


class LocalStorageConfig(StorageConfigBase):
    """A directory on a local or mounted filesystem (``type: local``)."""

    type: Literal["local"]
    path: AbsolutePath


def _describe_os_error(action: str, path: Path, error: OSError) -> StorageError:
    if error.errno == errno.ENOSPC:
        return StorageError(f"{action} {path}: no space left on device")
    return StorageError(f"{action} {path}: {error.strerror or error}")


class LocalWriter:
    def __init__(self, key: str, final: Path) -> None:
        self._key = key
        self._final = final
        self._temp = final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
        self._file = open_private(self._temp, "wb", exclusive=True)
        self._size = 0
        self._advised = 0  # bytes before this offset were handed to the disk (posix_fadvise)
        self._done = False

    def _write_sync(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._size += len(chunk)
        # Every WRITEBACK_WINDOW, ask the kernel to write back and drop the data written up to a
        # window ago (POSIX_FADV_DONTNEED starts writeback of dirty pages and drops clean ones; the
        # window before that is advised again, now written, so it is dropped too). The final fsync
        # then waits for about one window instead of the whole dump, and a backup does not push the
        # database's own pages out of the cache.
        upto = (self._size // WRITEBACK_WINDOW - 1) * WRITEBACK_WINDOW
        if upto > self._advised:
            self._file.flush()  # its errors (a full disk) are the write's
            start = max(0, self._advised - WRITEBACK_WINDOW)
            with contextlib.suppress(OSError):  # only advice: a filesystem may not take it
                os.posix_fadvise(self._file.fileno(), start, upto - start, os.POSIX_FADV_DONTNEED)
            self._advised = upto

    async def write(self, chunk: bytes) -> None:
        try:
            await asyncio.to_thread(self._write_sync, chunk)
        except OSError as error:
            # A failed write leaves the temporary file useless: remove it now, not at the caller's abort.
            await self.abort()
            raise _describe_os_error("cannot write", self._final, error) from None

    def _commit_sync(self, if_absent: bool) -> ObjectInfo:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if if_absent:
            os.link(self._temp, self._final)  # FileExistsError if taken: never replaces
            self._temp.unlink()
        else:
            self._temp.rename(self._final)
        fsync_dir(self._final.parent)
        return ObjectInfo(key=self._key, size=self._size, modified=datetime.fromtimestamp(self._final.stat().st_mtime, UTC))

    async def commit(self, *, if_absent: bool = False) -> ObjectInfo:
        """Make the object visible; with ``if_absent``, only if nothing is stored under its key (else ObjectExists)."""
        if self._done:
            raise StorageError(f"{self._final}: writer already finished")
        try:
            info = await asyncio.to_thread(self._commit_sync, if_absent)
        except FileExistsError:
            await self.abort()
            raise ObjectExists(f"{self._key}: an object already exists there") from None
        except OSError as error:
            await self.abort()
            raise _describe_os_error("cannot commit", self._final, error) from None
        self._done = True
        return info

    async def abort(self) -> None:
        self._done = True
        with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
            self._file.close()
        self._temp.unlink(missing_ok=True)


class LocalStorage:
    capabilities = Capabilities(delimiter_listing=True, stale_upload_cleanup=True, conditional_put=True)

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def describe(self) -> str:
        return f"{self.name} (local {self.root})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _info(self, key: str, path: Path) -> ObjectInfo:
        stat = path.stat()
        return ObjectInfo(key=key, size=stat.st_size, modified=datetime.fromtimestamp(stat.st_mtime, UTC))

    async def open_writer(self, key: str) -> LocalWriter:
        path = self._path(key)
        try:
            private_dirs(path.parent)
            return LocalWriter(key, path)
        except OSError as error:
            raise _describe_os_error("cannot create", path, error) from None

    async def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.name}: no object {key}") from None
        except OSError as error:
            raise _describe_os_error("cannot read", path, error) from None
        with handle:
            while True:
                try:
                    chunk = await asyncio.to_thread(handle.read, chunk_size)
                except OSError as error:
                    raise _describe_os_error("cannot read", path, error) from None
                if not chunk:
                    return
                yield chunk

    def _list_sync(self, prefix: str) -> list[ObjectInfo]:
        # Walk only the directory that can hold matches, then filter by the full key prefix.
        base_parts = prefix.split("/")[:-1]
        base = self.root.joinpath(*base_parts) if base_parts else self.root
        found: list[ObjectInfo] = []
        if not base.is_dir():
            return found
        for directory, _subdirs, files in os.walk(base):
            for file_name in files:
                path = Path(directory, file_name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        found.append(self._info(key, path))
                    except FileNotFoundError:  # deleted while listing
                        continue
        return sorted(found, key=lambda info: info.key)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        try:
            return await asyncio.to_thread(self._list_sync, prefix)
        except OSError as error:
            raise _describe_os_error("cannot list", self.root, error) from None

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            return self._info(key, path)
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.name}: no object {key}") from None
        except OSError as error:
            raise _describe_os_error("cannot stat", path, error) from None

    def _delete_sync(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Remove directories the deletion left empty, up to the root.
        parent = path.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._delete_sync, key)
        except OSError as error:
            raise _describe_os_error("cannot delete", self._path(key), error) from None

    async def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> ObjectInfo:
        writer = await self.open_writer(key)
        try:
            await writer.write(data)
        except BaseException:
            await writer.abort()
            raise
        if if_absent:
            # Fail early, without writing, when the key is visibly taken; link() decides races.
            if self._path(key).exists():
                await writer.abort()
                raise ObjectExists(f"{self.name}: an object already exists at {key}")
            try:
                return await writer.commit(if_absent=True)
            except ObjectExists:
                raise ObjectExists(f"{self.name}: an object already exists at {key}") from None
        return await writer.commit()

    def _list_dirs_sync(self, prefix: str) -> builtins.list[str]:
        base = self.root.joinpath(*check_key(prefix.rstrip("/")).split("/")) if prefix.strip("/") else self.root
        try:
            entries = builtins.list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(entry.name for entry in entries if entry.is_dir(follow_symlinks=False))

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        try:
            return await asyncio.to_thread(self._list_dirs_sync, prefix)
        except OSError as error:
            raise _describe_os_error("cannot list", self.root, error) from None

    def _stale_sync(self, older_than: datetime) -> builtins.list[str]:
        removed: builtins.list[str] = []
        cutoff = older_than.timestamp()
        if not self.root.is_dir():
            return removed
        for directory, _subdirs, files in os.walk(self.root):
            for file_name in files:
                if TEMP_MARK not in file_name:
                    continue
                path = Path(directory, file_name)
                with contextlib.suppress(FileNotFoundError):  # finished or removed meanwhile
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed.append(path.relative_to(self.root).as_posix())
        return sorted(removed)

    async def abort_stale_uploads(self, older_than: datetime) -> builtins.list[str]:
        """Remove temporary files (``.tmp-``) not written to since ``older_than``: leftovers of crashed writers."""
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=UTC)
        try:
            removed = await asyncio.to_thread(self._stale_sync, older_than)
        except OSError as error:
            raise _describe_os_error("cannot clean up under", self.root, error) from None
        if removed:
            log.info("removed stale temporary files", storage=self.name, keys=removed)
        return removed

    async def get_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])
