"""Streaming block-blob uploads with bounded memory (used by :mod:`dbguardian.storage.azure.storage`).

A writer stages the object as blocks (Put Block) and makes it visible with one Put Block List
(``commit_block_list``), which is atomic: before it, the blob does not exist for readers, listings
or ``stat``; after it, the whole object does. An object smaller than one block is a single Put Blob.

Block sizes: ``open_writer`` takes no size and a blob holds at most 50,000 blocks, so the block size
grows with the block number (:func:`block_size_for`): blocks 1-5000 have the configured
``block_size``, 5001-10000 twice that, and so on, capped at the service's 4000 MiB. From the default
4 MiB that is 19.5 GiB in 4 MiB blocks and about 20 TiB in 50,000 blocks; from the 1 MiB minimum, 5 TiB.

Memory: a writer holds one block being filled plus at most ``max_inflight_blocks`` blocks being
staged; ``write()`` waits (backpressure) while that many are in flight: at most
``(max_inflight_blocks + 1) x`` the current block size (defaults: 3 x 4 MiB = 12 MiB for the first
19.5 GiB). A block is filled in place and sent as a stream of views of it
(:class:`~dbguardian.storage.s3.multipart.PartBody`), with its MD5 so the service rejects a block
damaged on the way (Put Block's Content-MD5).

Block IDs are ``<16 hex of a per-writer token><8 digit block number>``: the same length for every
writer (the service wants one length per blob, uncommitted blocks of a crashed writer included), and
a writer commits only its own blocks.

What the service keeps of an unfinished upload: its staged blocks, as an *uncommitted blob* (listed
only with ``include=["uncommittedblobs"]``, never by ``list()``; ``stat`` says not found). ``abort()``
(also on failure and cancellation, shielded from cancellation) deletes that blob, but only if no
committed blob exists under the key (see :meth:`AzureWriter._abort_remote`); when the abort cannot
reach the service, ``AzureStorage.abort_stale_uploads`` (called by prune) deletes it later, and the
service itself discards uncommitted blocks a week after the last Put Block. (Unlike an aborted S3
upload, a deleted uncommitted blob comes back if its writer is still alive and stages another block;
that writer's commit then fails, since its first blocks are gone, and its abort deletes the blob.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from dbguardian.errors import ObjectNotFound, StorageError
from dbguardian.logs import get_logger
from dbguardian.storage.azure.config import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE
from dbguardian.storage.base import ObjectInfo
from dbguardian.storage.s3.multipart import PartBody

log = get_logger("dbguardian.storage.azure")

T = TypeVar("T")

MAX_BLOCKS = 50_000
BLOCKS_PER_DOUBLING = 5_000


def block_size_for(number: int, base: int) -> int:
    """The size of block ``number`` (1-based) when the configured block size is ``base``.

    ``base * 2 ** ((number - 1) // 5000)``, capped at 4000 MiB.
    """
    if not 1 <= number <= MAX_BLOCKS:
        raise ValueError(f"block number {number} is outside 1..{MAX_BLOCKS}")
    if not MIN_BLOCK_SIZE <= base <= MAX_BLOCK_SIZE:
        raise ValueError(f"block size {base} is outside {MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}")
    return min(base << ((number - 1) // BLOCKS_PER_DOUBLING), MAX_BLOCK_SIZE)


def block_id(token: str, number: int) -> str:
    """A block's ID (the SDK base64-encodes it): one length for every block of every writer."""
    return f"{token}{number:08d}"


class UploadBackend(Protocol):
    """What a writer needs from its storage (implemented by ``AzureStorage``)."""

    name: str

    def blob(self, full_key: str, connections: int = ...) -> AbstractAsyncContextManager[Any]: ...

    async def call(self, action: str, key: str, operation: Any, *, not_found: bool = ...) -> Any: ...

    def upload_params(self) -> dict[str, Any]: ...


class AzureWriter:
    """One object being written; see the module docstring for the upload scheme."""

    def __init__(self, backend: UploadBackend, key: str, full_key: str, *, block_size: int, max_inflight: int) -> None:
        block_size_for(1, block_size)  # validates
        self._backend = backend
        self._key = key
        self._full_key = full_key
        self._block_size = block_size
        self._max_inflight = max_inflight
        self._token = secrets.token_hex(8)
        self._opened = datetime.now(UTC)
        self._block: bytearray | None = None  # the block being filled, allocated at its final size
        self._filled = 0
        self._size = 0
        self._blocks_started = 0
        self._inflight: set[asyncio.Task[None]] = set()
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
            self._reap()  # a block that failed in the background fails the next write
            view = memoryview(chunk)
            while view:
                if self._block is None:
                    self._block = bytearray(block_size_for(self._blocks_started + 1, self._block_size))
                taken = min(len(view), len(self._block) - self._filled)
                self._block[self._filled : self._filled + taken] = view[:taken]
                view = view[taken:]
                self._filled += taken
                self._size += taken
                if self._filled == len(self._block):
                    await self._submit(self._take_block())
        except BaseException:
            await self.abort()
            raise

    async def commit(self) -> ObjectInfo:
        if self._finished:
            raise StorageError(f"{self._backend.name}: writer for {self._key} already finished")
        self._finished = True
        try:
            if self._blocks_started == 0:
                await self._put_whole()
            else:
                if self._filled:
                    await self._submit(self._take_block())
                await self._drain()
                await self._commit_blocks()
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

    def _take_block(self) -> bytearray:
        block, self._block = self._block if self._block is not None else bytearray(), None
        del block[self._filled :]
        self._filled = 0
        return block

    async def _get_client(self) -> Any:
        if self._client is None:
            stack = AsyncExitStack()
            self._client = await stack.enter_async_context(self._backend.blob(self._full_key, self._max_inflight + 1))
            self._stack = stack
        return self._client

    async def _close_client(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def _put_whole(self) -> None:
        client = await self._get_client()
        data = bytes(self._take_block())  # less than one block; Put Blob takes bytes only
        params = self._backend.upload_params()

        async def put() -> object:
            # validate_content: the SDK sends the MD5 (Content-MD5) and the service checks it.
            return await client.upload_blob(
                data, length=len(data), overwrite=True, max_concurrency=1, validate_content=True, **params
            )

        await self._backend.call("upload", self._key, put)

    async def _submit(self, data: bytearray) -> None:
        """Start staging one block, first waiting for a free slot (this is the backpressure)."""
        while len(self._inflight) >= self._max_inflight:
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            self._reap()
        self._fail_if_aborted()
        if self._blocks_started == MAX_BLOCKS:
            raise StorageError(f"{self._backend.name}: {self._key} exceeds Azure's limit of {MAX_BLOCKS} blocks")
        self._blocks_started += 1
        if self._blocks_started == 1:
            # The first block is staged before write() returns: a wrong credential or a missing container
            # fails the first write, and from then on the upload exists remotely (as after S3's
            # CreateMultipartUpload), where abort_stale_uploads can find it.
            await self._stage(1, data)
            return
        task = asyncio.create_task(self._stage(self._blocks_started, data))
        self._inflight.add(task)

    def _reap(self) -> None:
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

    async def _stage(self, number: int, data: bytearray) -> None:
        client = await self._get_client()
        digest = await asyncio.to_thread(lambda: hashlib.md5(data, usedforsecurity=False).digest())
        identifier = block_id(self._token, number)

        async def stage() -> object:
            # A fresh body per attempt: a retried block is sent again from its start.
            return await client.stage_block(identifier, PartBody(data), length=len(data), transactional_content_md5=digest)

        await self._backend.call(f"stage block {number} of", self._key, stage)

    async def _commit_blocks(self) -> None:
        client = await self._get_client()
        ids = [block_id(self._token, number) for number in range(1, self._blocks_started + 1)]
        params = self._backend.upload_params()
        # Idempotent: a retried Put Block List whose first attempt landed finds the same blocks committed
        # (the list names them as "latest": uncommitted first, else committed).
        await self._backend.call("commit the blocks of", self._key, lambda: client.commit_block_list(ids, **params))

    async def _abort_remote(self) -> None:
        for task in self._inflight:
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        self._inflight.clear()
        self._block, self._filled = None, 0
        try:
            if self._blocks_started:
                await self._delete_uncommitted()
        except StorageError as error:
            log.warning(
                "could not remove the uncommitted blocks of an aborted upload; they stay invisible and prune "
                "removes them later",
                storage=self._backend.name,
                key=self._key,
                error=str(error),
            )
        finally:
            await self._close_client()

    async def _delete_uncommitted(self) -> None:
        """Delete the blob holding our uncommitted blocks, never a committed blob.

        A committed blob under the key (an object this upload was going to replace) is left alone: its
        uncommitted blocks cannot be removed without rewriting it, the service discards them after a week.
        Between the check and the delete another writer may commit: the delete is conditional on the
        blob being unmodified since this writer opened (a commit after that refuses it).
        """
        client = await self._get_client()
        try:
            await self._backend.call("check for a committed", self._key, client.get_blob_properties, not_found=True)
        except ObjectNotFound:
            pass  # only uncommitted blocks (or nothing): ours to remove
        else:
            log.info(
                "an aborted upload replaced an existing object; its staged blocks are left to the service "
                "(discarded within a week)",
                storage=self._backend.name,
                key=self._key,
            )
            return
        since = self._opened - timedelta(seconds=1)
        with contextlib.suppress(ObjectNotFound):
            await self._backend.call(
                "delete the uncommitted blocks of",
                self._key,
                lambda: client.delete_blob(if_unmodified_since=since),
                not_found=True,
            )
