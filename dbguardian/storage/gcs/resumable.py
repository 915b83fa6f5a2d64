"""Streaming resumable uploads to GCS with bounded memory, and the markers that let prune find them.

The upload: a writer never knows how large its object will be, so data is cut into chunks of
``chunk_size`` (a multiple of 256 KiB, as GCS requires of every chunk but the last). An object that
ends within its first chunk is sent in one multipart request (no session at all). Otherwise the
first full chunk starts a resumable session (``uploadType=resumable``), and each chunk is a ``PUT``
on the session URI with ``Content-Range: bytes a-b/*``; the service answers 308 with the range it
persisted. ``commit()`` sends the rest with the total (``bytes a-b/N``, or ``bytes */N`` when
nothing is left), which finalizes the object: nothing is visible under the key before that.

Memory: a resumable upload is sequential (each chunk must start where the persisted bytes end), so
there is one chunk on the wire at a time while the next one fills; ``write()`` waits (backpressure)
until the chunk in flight has landed before it hands over a full one. A writer holds at most
``2 x chunk_size`` (default 2 x 8 MiB), in buffers allocated at their final size and sent as views
(no copies). More throughput per object would need parallel XML-API multipart uploads; a backup
writes to several storages at once anyway.

A chunk that fails transiently is retried from what the service says it persisted (a ``PUT`` with
``Content-Range: bytes */*``, Google's status query). If the service reports the upload finalized
early (200 where a 308 belonged, or a size other than the writer's), the object is deleted by its
generation and the write fails: a truncated object must never stay. (fake-gcs-server does this:
it treats the status query as the end of the upload.)

Leftovers: a resumable session cannot be listed through the API (it is known only by its URI),
and one that is never finalized or cancelled keeps what it received until GCS expires it a week
after it started. So, right after starting a session, the writer records its URI in a small marker
object ``<prefix>/.dbguardian-uploads/<random>.json`` (key, session URI, start time; the folder is
reserved: ``list()`` and ``list_dirs()`` never show it, no key may lie in it). ``commit()`` and
``abort()`` remove the marker; ``abort()`` (also on failure and cancellation, shielded) first
cancels the session with ``DELETE`` on its URI. A writer that was killed, or whose abort could not
reach the service, leaves its marker: ``abort_stale_uploads(older_than)`` (prune, with
``now - leftover_grace``) cancels the sessions of markers created before the cutoff and removes the
markers. Why markers rather than a local journal: any daemon or host that prunes the bucket finds
them, and they cost one small object per large upload. The one gap: a process killed between the
session's start and the marker's write (one request) leaves a session nobody can name; GCS expires it.
The marker holds the session URI, which allows uploading to that one session: it is as private as
the bucket's objects, and gone once the upload ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from dbguardian.errors import ObjectNotFound, StorageError, TransientStorageError
from dbguardian.logs import get_logger
from dbguardian.storage.base import ObjectInfo
from dbguardian.storage.gcs.storage import parse_time, pieces, raise_for_status

if TYPE_CHECKING:
    from dbguardian.storage.gcs.storage import GcsStorage

log = get_logger("dbguardian.storage.gcs")


def persisted_end(response: aiohttp.ClientResponse) -> int:
    """Bytes the service holds, from a 308's ``Range: bytes=0-N`` (no header: none)."""
    value = response.headers.get("Range", "")
    if not value.startswith("bytes=0-"):
        return 0
    return int(value.removeprefix("bytes=0-")) + 1


class GcsWriter:
    """One object being written; see the module docstring for the upload scheme."""

    def __init__(self, storage: GcsStorage, key: str, full_key: str, *, chunk_size: int) -> None:
        self._storage = storage
        self._key = key
        self._full_key = full_key
        self._chunk_size = chunk_size
        self._buffer: bytearray | None = None  # the chunk being filled, allocated at its final size
        self._filled = 0
        self._size = 0  # bytes written so far
        self._sent = 0  # bytes handed to the session (the offset of the next chunk)
        self._starting: asyncio.Future[tuple[str, str]] | None = None  # (session URI, marker name)
        self._session: str | None = None
        self._marker: str | None = None
        self._inflight: asyncio.Task[Any] | None = None
        self._stack: AsyncExitStack | None = None
        self._http: aiohttp.ClientSession | None = None
        self._finished = False
        self._committed = False
        self._aborting: asyncio.Future[None] | None = None

    @property
    def chunks_in_flight(self) -> int:
        return 0 if self._inflight is None or self._inflight.done() else 1

    def _fail_if_aborted(self) -> None:
        if self._aborting is not None:
            raise StorageError(f"{self._storage.name}: upload of {self._key} was aborted")

    async def write(self, chunk: bytes) -> None:
        if self._finished:
            raise StorageError(f"{self._storage.name}: writer for {self._key} already finished")
        try:
            self._reap()  # a chunk that failed in the background fails the next write
            view = memoryview(chunk)
            while view:
                if self._buffer is None:
                    self._buffer = bytearray(self._chunk_size)
                taken = min(len(view), len(self._buffer) - self._filled)
                self._buffer[self._filled : self._filled + taken] = view[:taken]
                view = view[taken:]
                self._filled += taken
                self._size += taken
                if self._filled == len(self._buffer):
                    await self._submit(self._take())
        except BaseException:
            await self.abort()
            raise

    async def commit(self) -> ObjectInfo:
        if self._finished:
            raise StorageError(f"{self._storage.name}: writer for {self._key} already finished")
        self._finished = True
        try:
            if self._starting is None:
                http = await self._get_http()
                data = self._take()
                item = await self._storage.call(
                    "upload", self._key, lambda: self._storage.upload_whole(http, self._full_key, data)
                )
            else:
                rest = self._take()
                await self._wait_inflight()
                item = await self._send(rest, self._sent, total=self._size)
        except BaseException:
            await self.abort()
            raise
        self._committed = True
        await self._forget_marker()
        await self._close_http()
        return ObjectInfo(self._key, self._size, parse_time(item.get("updated")))

    async def abort(self) -> None:
        """Discard everything written; idempotent, safe to call concurrently and while cancelled."""
        if self._committed:
            return
        self._finished = True
        if self._aborting is None:
            self._aborting = asyncio.ensure_future(self._abort_remote())
        await asyncio.shield(self._aborting)

    # -- internals ---------------------------------------------------------------------------

    def _take(self) -> memoryview:
        """The filled part of the chunk buffer (a view: no copy), leaving no chunk being filled."""
        buffer, self._buffer = self._buffer if self._buffer is not None else bytearray(), None
        view = memoryview(buffer)[: self._filled]
        self._filled = 0
        return view

    async def _get_http(self) -> aiohttp.ClientSession:
        if self._http is None:
            stack = AsyncExitStack()
            self._http = await stack.enter_async_context(self._storage.http(connections=2))
            self._stack = stack
        return self._http

    async def _close_http(self) -> None:
        stack, self._stack, self._http = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def _ensure_session(self) -> str:
        if self._session is None:
            if self._starting is None:
                http = await self._get_http()
                # Shielded: if we are cancelled while the session starts, abort() still learns its URI.
                self._starting = asyncio.ensure_future(start_upload(self._storage, http, self._key, self._full_key))
            self._session, self._marker = await asyncio.shield(self._starting)
        self._fail_if_aborted()
        return self._session  # type: ignore[return-value]  # (set just above)

    async def _submit(self, data: memoryview) -> None:
        """Hand a full chunk to the session once the one in flight has landed (this is the backpressure)."""
        await self._ensure_session()
        await self._wait_inflight()
        self._fail_if_aborted()
        start, self._sent = self._sent, self._sent + len(data)
        self._inflight = asyncio.create_task(self._send(data, start, total=None))

    def _reap(self) -> None:
        task = self._inflight
        if task is not None and task.done():
            self._inflight = None
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _wait_inflight(self) -> None:
        if self._inflight is not None:
            await asyncio.wait({self._inflight})
            self._reap()

    async def _send(self, data: memoryview, start: int, *, total: int | None) -> dict[str, Any]:
        """PUT ``data`` (bytes ``start``.. of the object) on the session; ``total``: the final chunk.

        Returns the object's metadata when this finalized the upload, else ``{}``.
        """
        http = await self._get_http()
        session = await self._ensure_session()
        end = start + len(data)
        persisted = start
        ask_first = False  # after a failed attempt: ask the service what it kept before sending again
        storage = self._storage

        async def once() -> dict[str, Any]:
            nonlocal persisted, ask_first
            if ask_first:
                kept = await self._status(http, session, total)
                if isinstance(kept, dict):
                    return await self._finalized(http, kept, total)
                if not start <= kept <= end:
                    raise StorageError(f"{storage.name}: the service holds {kept} bytes of {self._key}, expected "
                                       f"{start} to {end}; the upload cannot continue")  # fmt: skip
                persisted = kept
            ask_first = True
            while True:
                body = data[persisted - start :]
                if body:
                    size = "*" if total is None else str(total)
                    content_range = f"bytes {persisted}-{end - 1}/{size}"
                elif total is not None:
                    content_range = f"bytes */{total}"
                else:
                    ask_first = False
                    return {}
                headers = {**await storage.auth(http), "Content-Range": content_range, "Content-Length": str(len(body))}
                async with http.put(session, headers=headers, data=pieces(body), allow_redirects=False) as response:
                    if response.status in (200, 201):
                        item: dict[str, Any] = await response.json(content_type=None)
                        ask_first = False
                        return await self._finalized(http, item, total)
                    if response.status != 308:
                        await raise_for_status(response)
                        raise TransientStorageError(f"unexpected HTTP {response.status} to a chunk")
                    kept = persisted_end(response)
                if kept <= persisted and body:
                    raise TransientStorageError(f"the service kept none of the chunk at byte {persisted}")
                persisted = kept
                if total is None and persisted >= end:
                    ask_first = False
                    return {}

        return await storage.call(f"upload the chunk at byte {start} of", self._key, once)

    async def _status(self, http: aiohttp.ClientSession, session: str, total: int | None) -> int | dict[str, Any]:
        """Google's status query: bytes persisted so far, or the object if the upload is finalized."""
        headers = {**await self._storage.auth(http), "Content-Range": f"bytes */{'*' if total is None else total}",
                   "Content-Length": "0"}  # fmt: skip
        async with http.put(session, headers=headers, allow_redirects=False) as response:
            if response.status in (200, 201):
                item: dict[str, Any] = await response.json(content_type=None)
                return item
            if response.status == 308:
                return persisted_end(response)
            await raise_for_status(response)
            raise TransientStorageError(f"unexpected HTTP {response.status} to a status query")

    async def _finalized(self, http: aiohttp.ClientSession, item: dict[str, Any], total: int | None) -> dict[str, Any]:
        """The upload is finalized: fine if the object is whole, else delete it and fail."""
        size = int(item.get("size", -1))
        if total is not None and size == total:
            return item
        generation = str(item.get("generation", ""))
        with contextlib.suppress(Exception):
            if generation:
                await self._storage.delete_generation(http, self._full_key, generation)
        expected = f"{total} bytes" if total is not None else f"more than {self._sent} bytes"
        raise StorageError(f"{self._storage.name}: the service finalized the upload of {self._key} early, at {size} "
                           f"bytes of {expected}; the truncated object was deleted")  # fmt: skip

    async def _forget_marker(self) -> None:
        if self._marker is None:
            return
        marker, self._marker = self._marker, None
        try:
            http = await self._get_http()
            await delete_marker(self._storage, http, marker)
        except StorageError as error:
            log.warning("could not remove an upload marker; prune removes it later", storage=self._storage.name,
                        key=self._key, marker=marker, error=str(error))  # fmt: skip

    async def _abort_remote(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)
            self._inflight = None
        self._buffer, self._filled = None, 0
        session, marker = self._session, self._marker
        if session is None and self._starting is not None:
            try:
                session, marker = await self._starting
            except (Exception, asyncio.CancelledError):
                session, marker = None, None  # no session was started (or no marker written: start_upload cancelled it)
        try:
            if session is not None:
                http = await self._get_http()
                await self._storage.call("cancel the resumable upload of", self._key,
                                         lambda: self._storage.cancel_session(http, session))  # fmt: skip
                self._marker = marker
                await self._forget_marker()
        except StorageError as error:
            log.warning("could not cancel a resumable upload; prune cancels it later", storage=self._storage.name,
                        key=self._key, error=str(error))  # fmt: skip
        finally:
            await self._close_http()


# -- markers -------------------------------------------------------------------------------------


async def start_upload(storage: GcsStorage, http: aiohttp.ClientSession, key: str, full_key: str) -> tuple[str, str]:
    """Start a resumable session for ``full_key`` and record it in a marker: (session URI, marker name)."""
    session = await storage.call("start a resumable upload of", key, lambda: storage.start_session(http, full_key))
    marker = f"{storage.marker_root}{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(8)}.json"
    record = json.dumps({"key": key, "object": full_key, "session": session, "started": datetime.now(UTC).isoformat()})
    try:
        await storage.call("record the upload marker of", key, lambda: storage.upload_whole(http, marker, record.encode()))
    except BaseException:
        with contextlib.suppress(Exception):  # no marker: nobody else could ever cancel this session
            await storage.cancel_session(http, session)
        raise
    return session, marker


async def delete_marker(storage: GcsStorage, http: aiohttp.ClientSession, marker: str) -> None:
    client = storage.library(http)
    with contextlib.suppress(ObjectNotFound):
        await storage.call("remove the upload marker", marker, lambda: client.delete(storage.bucket, marker, timeout=60),
                           not_found=True)  # fmt: skip


async def abort_stale_uploads(storage: GcsStorage, older_than: datetime) -> list[str]:
    """Cancel the sessions of markers created before ``older_than`` and remove the markers; their keys, sorted.

    Uploads left by a killed writer, or by an abort that could not reach the service; prune calls
    this with ``now - leftover_grace``, so running uploads are left alone.
    """
    if older_than.tzinfo is None:
        older_than = older_than.replace(tzinfo=UTC)
    items, _ = await storage._list(storage.marker_root)
    stale = sorted(
        str(item["name"]) for item in items if parse_time(item.get("timeCreated") or item.get("updated")) < older_than
    )
    aborted: list[str] = []
    async with storage.http() as http:
        client = storage.library(http)
        for marker in stale:
            key = await _cancel_marked(storage, http, client, marker)
            if key is not None:
                aborted.append(key)
    return sorted(aborted)


async def _cancel_marked(storage: GcsStorage, http: aiohttp.ClientSession, client: Any, marker: str) -> str | None:
    """Cancel the session one marker names and remove the marker: the upload's key (None: the marker went meanwhile)."""

    async def download() -> bytes:
        data: bytes = await client.download(storage.bucket, marker, timeout=60)
        return data

    try:
        raw = await storage.call("read the upload marker", marker, download, not_found=True)
    except ObjectNotFound:
        return None  # removed meanwhile (its upload ended)
    try:
        record = json.loads(raw)
        key, session = str(record["key"]), str(record["session"])
    except (ValueError, KeyError, TypeError):
        log.warning("removing an unreadable upload marker", storage=storage.name, marker=marker)
        await delete_marker(storage, http, marker)
        return None
    await storage.call("cancel the stale resumable upload of", key, lambda: storage.cancel_session(http, session))
    await delete_marker(storage, http, marker)
    log.info("cancelled a stale resumable upload", storage=storage.name, key=key, marker=marker)
    return key
