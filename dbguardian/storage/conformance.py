"""The storage contract as executable checks: ``await run_conformance(factory)`` for any backend.

``factory()`` returns a fresh, empty storage (its own directory, bucket prefix, ...). Every check
gets its own storage. Checks of optional abilities run only where the backend declares them in
its :class:`~dbguardian.storage.base.Capabilities` (and a declaration without the behaviour fails).
A failed check raises :class:`ConformanceError` naming the check. Used by
``tests/storage/test_conformance.py`` for local, memory and S3 (moto); a new backend's tests call it
with their own factory. Nothing here depends on pytest.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.storage.base import Storage, stale_upload_cleaner

StorageFactory = Callable[[], Storage]
Check = Callable[[Storage], Awaitable[None]]


class NotDeclared(Exception):
    """An optional ability the backend does not declare: its check is skipped, not passed."""


class ConformanceError(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


async def expect_raises(error_type: type[BaseException], action: Awaitable[object], message: str) -> BaseException:
    try:
        await action
    except error_type as error:
        return error
    raise ConformanceError(f"{message}: no {error_type.__name__} raised")


async def write_object(storage: Storage, key: str, chunks: list[bytes]) -> None:
    """Write ``chunks`` under ``key`` and commit (helper for checks and backend tests)."""
    writer = await storage.open_writer(key)
    for chunk in chunks:
        await writer.write(chunk)
    await writer.commit()


async def read_object(storage: Storage, key: str) -> bytes:
    """The whole object, read in small chunks (so chunking is exercised)."""
    return b"".join([chunk async for chunk in storage.read(key, chunk_size=1000)])


async def _keys(storage: Storage, prefix: str = "") -> list[str]:
    return [info.key for info in await storage.list(prefix)]


# -- the contract every backend keeps ----------------------------------------------------------


async def streamed_write_then_read(storage: Storage) -> None:
    data = os.urandom(10_000)
    await write_object(storage, "t/a/dump", [data[:3000], data[3000:], b""])
    expect(await read_object(storage, "t/a/dump") == data, "read returns what was written")
    info = await storage.stat("t/a/dump")
    expect((info.key, info.size) == ("t/a/dump", 10_000), f"stat reports key and size, got {info}")


async def nothing_visible_before_commit_or_after_abort(storage: Storage) -> None:
    writer = await storage.open_writer("t/b/dump")
    await writer.write(b"partial")
    visible = [key for key in await _keys(storage, "t/") if ".tmp-" not in key]
    expect(visible == [], f"nothing listed before commit, got {visible}")
    await expect_raises(ObjectNotFound, storage.stat("t/b/dump"), "stat before commit")
    await writer.abort()
    expect(await storage.list("t/") == [], "nothing left after abort")


async def missing_objects(storage: Storage) -> None:
    await expect_raises(ObjectNotFound, read_object(storage, "nope/x"), "reading a missing key")
    await expect_raises(ObjectNotFound, storage.stat("nope/x"), "stat of a missing key")
    expect(await storage.list("nope/") == [], "a prefix with nothing under it lists as empty")
    await storage.delete("nope/x")  # idempotent


async def list_is_recursive_sorted_and_prefix_exact(storage: Storage) -> None:
    for key in ["app/2/m", "app/1/m", "app/1/d", "apple/1/m", "other/x"]:
        await storage.put_bytes(key, key.encode())
    expect(await _keys(storage, "app/") == ["app/1/d", "app/1/m", "app/2/m"], "list('app/')")
    expect(await _keys(storage, "app") == ["app/1/d", "app/1/m", "app/2/m", "apple/1/m"], "list('app')")
    expect(len(await storage.list()) == 5, "list() lists everything")


async def put_replaces_and_delete_removes(storage: Storage) -> None:
    await storage.put_bytes("k/v", b"one")
    await storage.put_bytes("k/v", b"two")
    expect(await storage.get_bytes("k/v") == b"two", "put_bytes replaces")
    await storage.delete("k/v")
    await expect_raises(ObjectNotFound, storage.get_bytes("k/v"), "reading a deleted key")
    expect(await storage.list("k/") == [], "a deleted key is not listed")


async def unsafe_keys_rejected(storage: Storage) -> None:
    for key in ["", "/abs", "a/../b", "a//b", "./a", "a/."]:
        error = await expect_raises(StorageError, storage.put_bytes(key, b"x"), f"put_bytes({key!r})")
        expect("invalid storage key" in str(error), f"put_bytes({key!r}) names the invalid key, got {error}")


async def list_dirs_names_the_next_level(storage: Storage) -> None:
    for key in ["app/2/m", "app/1/m", "app/1/sub/d", "app/x", "apple/3/m", "other/y"]:
        await storage.put_bytes(key, b"-")
    expect(await storage.list_dirs("app/") == ["1", "2"], "list_dirs('app/'): folders only, sorted")
    expect(await storage.list_dirs("app") == ["1", "2"], "list_dirs('app') is the folder app/")
    expect(await storage.list_dirs("") == ["app", "apple", "other"], "list_dirs('') lists the root")
    expect(await storage.list_dirs("app/1/") == ["sub"], "list_dirs one level down")
    expect(await storage.list_dirs("app/2/") == [], "a folder with objects only")
    expect(await storage.list_dirs("nope/") == [], "a missing prefix lists as empty")


# -- optional abilities, where declared ---------------------------------------------------------


async def conditional_put_creates_only_once(storage: Storage) -> None:
    if not storage.capabilities.conditional_put:
        raise NotDeclared("conditional_put")
    await storage.put_bytes("c/manifest.json", b"first", if_absent=True)
    await expect_raises(ObjectExists, storage.put_bytes("c/manifest.json", b"second", if_absent=True), "a second create")
    expect(await storage.get_bytes("c/manifest.json") == b"first", "a refused create changes nothing")
    expect(await _keys(storage, "c/") == ["c/manifest.json"], "a refused create leaves nothing behind")
    await storage.delete("c/manifest.json")
    await storage.put_bytes("c/manifest.json", b"third", if_absent=True)
    expect(await storage.get_bytes("c/manifest.json") == b"third", "a freed key can be created again")


async def stale_uploads_are_cleaned_up(storage: Storage) -> None:
    cleaner = stale_upload_cleaner(storage)
    if cleaner is None:
        raise NotDeclared("stale_upload_cleanup")
    writer = await storage.open_writer("s/1/dump")
    await writer.write(os.urandom(6 * 1024 * 1024))  # more than one S3 part: the upload exists remotely
    expect(await cleaner.abort_stale_uploads(datetime(2000, 1, 1, tzinfo=UTC)) == [], "a young upload is kept")
    removed = await cleaner.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1))
    expect(len(removed) == 1 and removed[0].startswith("s/1/"), f"the stale upload is removed, got {removed}")
    expect(await cleaner.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1)) == [], "and only once")
    await writer.abort()
    expect(await storage.list("s/") == [], "nothing visible is left")


CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        streamed_write_then_read,
        nothing_visible_before_commit_or_after_abort,
        missing_objects,
        list_is_recursive_sorted_and_prefix_exact,
        put_replaces_and_delete_removes,
        unsafe_keys_rejected,
        list_dirs_names_the_next_level,
        conditional_put_creates_only_once,
        stale_uploads_are_cleaned_up,
    )
}


async def run_check(factory: StorageFactory, name: str) -> Literal["passed", "skipped"]:
    """One check on a fresh storage: ``passed``, ``skipped`` (an optional ability not declared), or raises."""
    try:
        await CHECKS[name](factory())
    except NotDeclared:
        return "skipped"
    except ConformanceError as error:
        raise ConformanceError(f"{name}: {error}") from None
    return "passed"


async def run_conformance(factory: StorageFactory) -> dict[str, Literal["passed", "skipped"]]:
    """Run every check, each on a fresh storage from ``factory``; what became of each (raises on the first failure)."""
    return {name: await run_check(factory, name) for name in CHECKS}
