"""Streaming multipart uploads to S3 with bounded memory (used by :mod:`dbguardian.storage.s3.storage`).

Part sizes: a writer never knows how large its object will be (``open_writer`` takes no size), so
the part size grows with the part number. Parts 1-900 have the configured ``part_size``, parts
901-1800 twice that, 1801-2700 four times, … capped at S3's 5 GiB maximum
(:func:`part_size_for`). Even from the 5 MiB minimum, 10,000 parts then hold more than S3's
5 TiB maximum object size (doubling every 1000 parts would fall just short: 4.9 TiB), while an
object of a few GiB never leaves the first size. With the default 5 MiB: 4.4 GiB in 5 MiB parts,
13 GiB after 10 MiB parts, 31 GiB after 20 MiB parts, 66 GiB after 40 MiB parts, and so on.

Memory: a writer holds one part being filled plus at most ``max_inflight_parts`` parts being
uploaded; ``write()`` waits (backpressure) while that many are in flight, so it holds at most
``(max_inflight_parts + 1) x`` the current part size (defaults: 3 x 5 MiB = 15 MiB for the first
4.4 GiB of an object). A part is filled in place in a buffer of its final size and handed to the
upload as a stream (:class:`PartBody`): no copy, no growing buffer (either would briefly double a
part). A sent part is let go as soon as its request returns (:func:`send_part` closes the body): the
request and response objects around a body form reference cycles, which kept a sent part alive
until the cyclic GC ran, so a writer held one part more than the bound (4 of 5 MiB with 2 in
flight, counted on moto; issue 14, bench/README.md). Each part in flight uses its own HTTP
connection: the writer's client gets a pool of ``max_inflight_parts + 1`` connections (botocore's
default of 10 would silently cap ``max_inflight_parts`` above 10).

Objects that stay smaller than one part are stored with a single ``PutObject``. Nothing is visible
under the key before ``CompleteMultipartUpload``; a failure, ``abort()`` or cancellation aborts the
upload (the abort is shielded from cancellation). An abort that cannot reach the store leaves the
upload for ``S3Storage.abort_stale_uploads`` (called by prune).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar

from dbguardian.errors import ObjectNotFound, StorageError
from dbguardian.logs import get_logger
from dbguardian.storage.base import ObjectInfo

log = get_logger("dbguardian.storage.s3")

T = TypeVar("T")

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024 * GiB
PARTS_PER_DOUBLING = 900


def part_size_for(part_number: int, base: int) -> int:
    """The size of part ``part_number`` (1-based) when the configured part size is ``base``.

    ``base * 2 ** ((part_number - 1) // 900)``, capped at 5 GiB: every part lies within S3's
    5 MiB..5 GiB and 10,000 parts hold at least 5 TiB for any ``base`` in that range.
    """
    if not 1 <= part_number <= MAX_PARTS:
        raise ValueError(f"part number {part_number} is outside 1..{MAX_PARTS}")
    if not MIN_PART_SIZE <= base <= MAX_PART_SIZE:
        raise ValueError(f"part size {base} is outside {MIN_PART_SIZE}..{MAX_PART_SIZE}")
    return min(base << ((part_number - 1) // PARTS_PER_DOUBLING), MAX_PART_SIZE)


class PartBody(io.RawIOBase):
    """A part's bytes as a seekable stream, read in place.

    Given ``bytes``, the HTTP layer writes the whole part to the socket transport at once, and the
    transport copies what the socket does not take right away: nearly a second copy of every part
    in flight. A stream is sent in small reads instead. botocore reads it for the checksum and the
    signature and seeks back; one body serves one attempt (the position moves). ``read()`` returns
    views of the part, so sending it allocates nothing (fresh 64 KiB copies, made in aiohttp's reader
    threads, left per-thread malloc arenas fragmented and RSS tens of MB higher).
    """

    def __init__(self, data: bytearray) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), len(self._view) - self._position)
        buffer[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def read(self, size: int | None = -1) -> memoryview:  # type: ignore[override,unused-ignore]
        # A view, not a copy: its readers (checksum, signature, HTTP writer) only need a buffer.
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._position + size)
        chunk = self._view[self._position : end]
        self._position = max(self._position, end)
        return chunk

    def readall(self) -> memoryview:  # type: ignore[override]
        return self.read()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return len(self._view)

    def close(self) -> None:
        # Let go of the part at once: the request and response objects around this body form reference
        # cycles, which kept a sent part alive until the cyclic GC ran (one more part than the bound).
        with contextlib.suppress(BufferError):  # a buffer taken of the view itself: it goes with its holder
            self._view.release()
        self._view = memoryview(b"")
        self._position = 0
        super().close()


async def send_part(send: Callable[[PartBody], Awaitable[T]], data: bytearray) -> T:
    """``send(body)`` with a fresh :class:`PartBody` over ``data`` (one per attempt), closed afterwards."""
    body = PartBody(data)
    try:
        return await send(body)
    finally:
        body.close()


class UploadBackend(Protocol):
    """What a writer needs from its storage (implemented by ``S3Storage``)."""

    name: str
    bucket: str
    checksums: bool

    def client(self, connections: int = ...) -> AbstractAsyncContextManager[Any]: ...

    async def call(self, action: str, key: str, operation: Callable[[], Awaitable[T]], *, not_found: bool = ...) -> T: ...

    def object_params(self) -> dict[str, str]: ...


class S3Writer:
    """One object being written; see the module docstring for the upload scheme."""

    def __init__(self, backend: UploadBackend, key: str, full_key: str, *, part_size: int, max_inflight: int) -> None:
        part_size_for(1, part_size)  # validates
        self._backend = backend
        self._key = key
        self._full_key = full_key
        self._part_size = part_size
        self._max_inflight = max_inflight
        self._part: bytearray | None = None  # the part being filled, allocated at its final size
        self._filled = 0  # bytes of _part in use
        self._size = 0
        self._parts_started = 0
        self._create: asyncio.Future[dict[str, Any]] | None = None
        self._upload_id: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._parts: dict[int, dict[str, Any]] = {}
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._finished = False  # commit() started or abort() called: no more writes
        self._committed = False
        self._aborting: asyncio.Future[None] | None = None

    def _fail_if_aborted(self) -> None:
        if self._aborting is not None:
            raise StorageError(f"{self._backend.name}: upload of {self._key} was aborted")

    async def write(self, chunk: bytes) -> None:
        if self._finished:
            raise StorageError(f"{self._backend.name}: writer for {self._key} already finished")
        try:
            self._reap()  # a part that failed in the background fails the next write
            view = memoryview(chunk)
            while view:
                if self._part is None:  # (_filled is 0 whenever there is no part)
                    self._part = bytearray(part_size_for(self._parts_started + 1, self._part_size))
                taken = min(len(view), len(self._part) - self._filled)
                self._part[self._filled : self._filled + taken] = view[:taken]
                view = view[taken:]
                self._filled += taken
                self._size += taken
                if self._filled == len(self._part):
                    await self._submit(self._take_part())
        except BaseException:
            await self.abort()
            raise

    async def commit(self) -> ObjectInfo:
        if self._finished:
            raise StorageError(f"{self._backend.name}: writer for {self._key} already finished")
        self._finished = True
        try:
            if self._create is None:
                await self._put_whole()
            else:
                if self._filled:
                    await self._submit(self._take_part())
                await self._drain()
                await self._complete()
        except BaseException:
            await self.abort()
            raise
        self._committed = True
        await self._close_client()
        return ObjectInfo(self._key, self._size, datetime.now(UTC))

    async def abort(self) -> None:
        """Discard everything written; idempotent, safe to call concurrently and while cancelled."""
        if self._committed:
            return
        self._finished = True
        if self._aborting is None:
            self._aborting = asyncio.ensure_future(self._abort_remote())
        await asyncio.shield(self._aborting)

    # -- internals ---------------------------------------------------------------------------

    def _take_part(self) -> bytearray:
        """The filled part, trimmed to its content (in place), leaving no part being filled."""
        part, self._part = self._part if self._part is not None else bytearray(), None
        del part[self._filled :]
        self._filled = 0
        return part

    async def _get_client(self) -> Any:
        if self._client is None:
            stack = AsyncExitStack()
            # Every part in flight has its own connection, plus one for create/complete/abort.
            self._client = await stack.enter_async_context(self._backend.client(self._max_inflight + 1))
            self._stack = stack
        return self._client

    async def _close_client(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def _put_whole(self) -> None:
        client = await self._get_client()
        data = self._take_part()
        params = {"Bucket": self._backend.bucket, "Key": self._full_key, **self._backend.object_params()}
        await self._backend.call(
            "upload", self._key, lambda: send_part(lambda body: client.put_object(**params, Body=body), data)
        )

    async def _ensure_upload(self) -> str:
        if self._upload_id is None:
            if self._create is None:
                client = await self._get_client()
                params = {"Bucket": self._backend.bucket, "Key": self._full_key, **self._backend.object_params()}
                operation = partial(client.create_multipart_upload, **params)
                # Shielded: if we are cancelled while S3 creates the upload, abort() still learns its id.
                self._create = asyncio.ensure_future(self._backend.call("start a multipart upload of", self._key, operation))
            created = await asyncio.shield(self._create)
            self._upload_id = str(created["UploadId"])
        self._fail_if_aborted()
        return self._upload_id

    async def _submit(self, data: bytearray) -> None:
        """Start uploading one part, first waiting for a free slot (this is the backpressure)."""
        upload_id = await self._ensure_upload()
        while len(self._inflight) >= self._max_inflight:
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            self._reap()
        self._fail_if_aborted()
        if self._parts_started == MAX_PARTS:
            raise StorageError(f"{self._backend.name}: {self._key} exceeds S3's limit of {MAX_PARTS} parts")
        self._parts_started += 1
        task = asyncio.create_task(self._upload_part(upload_id, self._parts_started, data))
        self._inflight.add(task)

    def _reap(self) -> None:
        """Forget finished part uploads; raise the first failure."""
        for task in [task for task in self._inflight if task.done()]:
            self._inflight.discard(task)
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error

    async def _drain(self) -> None:
        while self._inflight:
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_EXCEPTION)
            self._reap()
        self._fail_if_aborted()

    async def _upload_part(self, upload_id: str, number: int, data: bytearray) -> None:
        client = await self._get_client()
        params: dict[str, Any] = {
            "Bucket": self._backend.bucket,
            "Key": self._full_key,
            "UploadId": upload_id,
            "PartNumber": number,
        }
        if self._backend.checksums:
            params["ChecksumAlgorithm"] = "CRC32"
        response = await self._backend.call(
            f"upload part {number} of",
            self._key,
            lambda: send_part(lambda body: client.upload_part(**params, Body=body), data),
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if self._backend.checksums and response.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        self._parts[number] = part

    async def _complete(self) -> None:
        upload_id = await self._ensure_upload()
        client = await self._get_client()
        parts = [self._parts[number] for number in sorted(self._parts)]
        attempts = 0

        async def complete_once() -> object:
            nonlocal attempts
            attempts += 1
            try:
                return await client.complete_multipart_upload(
                    Bucket=self._backend.bucket, Key=self._full_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except Exception as error:
                # A retried complete whose first attempt succeeded (response lost) finds no upload.
                if attempts > 1 and _error_code(error) == "NoSuchUpload" and await self._landed(client, len(parts)):
                    return {}
                raise

        await self._backend.call("complete the multipart upload of", self._key, complete_once)

    async def _landed(self, client: Any, part_count: int) -> bool:
        with contextlib.suppress(Exception):
            head = await client.head_object(Bucket=self._backend.bucket, Key=self._full_key)
            return bool(head["ContentLength"] == self._size and str(head.get("ETag", "")).endswith(f'-{part_count}"'))
        return False

    async def _abort_remote(self) -> None:
        for task in self._inflight:
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        self._inflight.clear()
        self._part, self._filled = None, 0
        self._parts.clear()
        upload_id = self._upload_id
        if upload_id is None and self._create is not None:
            try:
                upload_id = str((await self._create)["UploadId"])
            except (Exception, asyncio.CancelledError):
                upload_id = None  # the upload was never created
        try:
            if upload_id is not None:
                client = await self._get_client()
                operation = partial(
                    client.abort_multipart_upload, Bucket=self._backend.bucket, Key=self._full_key, UploadId=upload_id
                )
                with contextlib.suppress(ObjectNotFound):  # already gone
                    await self._backend.call("abort the multipart upload of", self._key, operation, not_found=True)
        except StorageError as error:
            log.warning(
                "could not abort a multipart upload; it stays invisible and prune removes it later",
                storage=self._backend.name,
                key=self._key,
                upload_id=upload_id,
                error=str(error),
            )
        finally:
            await self._close_client()


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
