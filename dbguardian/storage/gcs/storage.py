"""Google Cloud Storage through its JSON API, on the daemon's own asyncio loop.

Objects live under ``<prefix>/<key>`` in the bucket. Writes stream as resumable uploads in chunks
(:mod:`dbguardian.storage.gcs.resumable`); an object appears only when its upload is finalized, so
in-progress writes never show up in listings. Capabilities
(:data:`~dbguardian.storage.gcs.config.GCS_CAPABILITIES`): delimiter listing (``prefixes``),
stale-upload cleanup (resumable sessions recorded in upload markers), conditional put
(``ifGenerationMatch=0``).

Client: gcloud-aio-storage (async, on aiohttp, which dbguardian already runs its HTTP server on),
with gcloud-aio-auth for the credentials (:mod:`dbguardian.storage.gcs.auth`). The library's
``Storage`` serves listing, object metadata and deletes. Three things it cannot do, so those requests
speak the JSON API directly, on the same aiohttp session with the same bearer token:

- streamed resumable uploads: its ``upload`` needs the whole object up front (it measures the
  stream's length) and sends it in one PUT; a backup has no length until it ends and must not be
  held in memory. Chunked ``Content-Range`` PUTs, the status query and session cancellation
  (``DELETE`` on the session URI) are not in the library at all.
- small uploads without copies: its multipart upload (the only way to send metadata such as the
  storage class with the data) joins metadata and data into one new ``bytes``; a 16 MiB WAL segment
  shipped ``wal.parallel`` at a time would be copied several times. Here the body is streamed in
  pieces from the caller's buffer (and ``ifGenerationMatch=0`` goes in the query).
- reads pinned to a generation: its ``download_stream`` takes no query parameters, so a download
  resumed after a dropped connection could not ask for the same generation it started reading.

Sessions: an aiohttp session belongs to one event loop; the storage keeps none open. Every
operation opens one and closes it when done, and each writer holds its own from its first request
until commit or abort. The access token is cached across operations and loops (auth.py).

Retries: transient failures only, by the shared policy of :mod:`dbguardian.storage.retry`
(``retries`` from the policy): connection failures, timeouts, dropped or truncated responses,
HTTP 408/429/500/502/503/504. Everything else (403, a missing bucket, 400, bad credentials) fails
at once with one line naming storage, bucket and key. Reads resume a broken download where it
stopped, pinned to the generation they started on. A chunk of a resumable upload that failed is
resumed from what the service says it persisted (the status query), as Google documents.

IAM: ``roles/storage.objectUser`` on the bucket (or a custom role with storage.objects.create,
.get, .list, .delete); ``roles/storage.objectCreator`` alone cannot delete (prune, aborts, markers).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from gcloud.aio.storage import Storage as LibraryStorage

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.logs import get_logger
from dbguardian.storage import retry
from dbguardian.storage.base import READ_CHUNK, ObjectInfo, check_key, folder
from dbguardian.storage.gcs.auth import AccessTokens
from dbguardian.storage.gcs.config import GCS_CAPABILITIES, GcsStorageConfig
from dbguardian.storage.retry import RetryPolicy

log = get_logger("dbguardian.storage.gcs")

T = TypeVar("T")

GOOGLE_API = "https://storage.googleapis.com"
MARKERS = ".dbguardian-uploads/"
"""Reserved folder (below the prefix) of the upload markers; never listed, never a key."""
SEND_PIECE = 256 * 1024
"""Bodies are handed to aiohttp in pieces this size: the socket transport then never holds a copy
of a whole chunk (Python 3.11's transport copies whatever the socket does not take at once)."""
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,  # refused, reset, server disconnected, DNS
    aiohttp.ClientPayloadError,  # a body cut short
    ConnectionError,
    TimeoutError,
)
_UPLOAD_ID = re.compile(r"(upload_id=)[^&\s'\"]+")


def status_of(error: BaseException) -> int | None:
    return error.status if isinstance(error, aiohttp.ClientResponseError) else None


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same request may succeed."""
    if retry.is_transient(error):
        return True
    if isinstance(error, aiohttp.ClientResponseError):
        return error.status in TRANSIENT_STATUS
    return isinstance(error, TRANSIENT_EXCEPTIONS)


def response_detail(error: aiohttp.ClientResponseError) -> str:
    """Google's own message from an error response (``{"error": {"message": ...}}``), else the reason."""
    reason, _, body = (error.message or "").partition(": ")
    detail = ""
    with contextlib.suppress(ValueError, AttributeError):
        data = json.loads(body)
        inner = data.get("error")
        detail = (
            str(inner.get("message", "")) if isinstance(inner, dict) else str(data.get("error_description") or inner or "")
        )
    if not detail:
        detail = body.strip()[:200] or reason
    return " ".join(detail.split())


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    """Like gcloud-aio-auth's check: an error response becomes ClientResponseError carrying its body."""
    if response.status >= 400:
        body = await response.text(errors="replace")
        raise aiohttp.ClientResponseError(
            response.request_info, response.history, status=response.status, message=f"{response.reason}: {body}",
            headers=response.headers,
        )  # fmt: skip


def parse_time(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def pieces(*parts: bytes | memoryview) -> AsyncIterator[bytes | memoryview]:
    """A request body sent in ``SEND_PIECE`` views of the given buffers (no copies)."""
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(view), SEND_PIECE):
            yield view[start : start + SEND_PIECE]


class GcsStorage:
    capabilities = GCS_CAPABILITIES

    def __init__(self, name: str, config: GcsStorageConfig, *, backoff_base: float = 0.5, backoff_max: float = 20.0) -> None:
        self.name = name
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.api_root = config.endpoint_url or GOOGLE_API
        self.retry_policy = RetryPolicy(config.retries, wait_initial=backoff_base, wait_max=backoff_max)
        self.tokens = AccessTokens(name, config.credentials_file, config.anonymous)

    def describe(self) -> str:
        where = self.config.endpoint_url or "Google Cloud Storage"
        return f"{self.name} (gs://{self.bucket}/{self._root} at {where})"

    def full_key(self, key: str) -> str:
        check_key(key)
        if key.startswith(MARKERS):
            raise StorageError(f"invalid storage key {key!r} (the folder {MARKERS} is reserved for upload markers)")
        return self._root + key

    @property
    def marker_root(self) -> str:
        return self._root + MARKERS

    def object_url(self, full_key: str) -> str:
        return f"{self.api_root}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(full_key, safe='')}"

    @property
    def upload_url(self) -> str:
        return f"{self.api_root}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"

    # -- sessions, retries, errors -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def http(self, connections: int = 2) -> AsyncIterator[aiohttp.ClientSession]:
        """A fresh aiohttp session for the running loop, closed on exit (bodies are not decompressed)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=20, sock_read=120)
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False) as session:
            yield session

    async def auth(self, http: aiohttp.ClientSession) -> dict[str, str]:
        """The Authorization header (none when anonymous), fetching or refreshing the token if needed."""
        return await self.tokens.headers(http, self._refresh_token)

    async def _refresh_token(self, operation: Callable[[], Awaitable[T]]) -> T:
        return await self.call("get an access token for", "", operation)

    def library(self, http: aiohttp.ClientSession) -> LibraryStorage:
        """gcloud-aio-storage on this session, authenticated by our token cache."""
        return LibraryStorage(
            session=http, token=_LibraryToken(self, http), api_root=self.api_root,  # type: ignore[arg-type]
            api_is_dev=self.config.anonymous,
        )  # fmt: skip

    def redact(self, text: str) -> str:
        """One line; never a resumable session's id (whoever holds it may upload to it)."""
        return _UPLOAD_ID.sub(r"\1***", " ".join(text.split()))

    def error(
        self, action: str, key: str, error: BaseException, attempts: int = 1, *, not_found: bool = False
    ) -> StorageError:
        """One operator-readable line naming the storage, bucket and key; never credentials."""
        location = f"gs://{self.bucket}/{self._root}{key}"
        status = status_of(error)
        if isinstance(error, aiohttp.ClientResponseError):
            detail = response_detail(error)
            if status == 404 and "bucket" in detail.lower():
                reason = f"bucket {self.bucket} does not exist"
            elif not_found and status == 404:
                return ObjectNotFound(f"{self.name}: no object {key} ({location})")
            else:
                reason = f"HTTP {status}" + (f": {detail}" if detail else "")
        else:
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if attempts > 1:
            reason += f" (gave up after {attempts} attempts)"
        return StorageError(self.redact(f"{self.name}: cannot {action} {location}: {reason}"))

    async def call(self, action: str, key: str, operation: Callable[[], Awaitable[T]], *, not_found: bool = False) -> T:
        """Run one request, retrying transient failures; any failure becomes a StorageError."""

        def retrying(error: Exception, attempt: int, delay: float) -> None:
            log.warning("transient GCS error; retrying", storage=self.name, action=action, key=key, attempt=attempt,
                        delay=round(delay, 3), error=self.redact(str(error)))  # fmt: skip

        def give_up(error: Exception, attempts: int) -> BaseException:
            if isinstance(error, StorageError):
                return error
            return self.error(action, key, error, attempts, not_found=not_found)

        return await retry.call(operation, self.retry_policy, transient=is_transient, on_retry=retrying, on_give_up=give_up)

    # -- requests the library does not make ----------------------------------------------------

    async def upload_whole(
        self, http: aiohttp.ClientSession, full_key: str, data: bytes | memoryview, *, if_absent: bool = False
    ) -> dict[str, Any]:
        """One multipart upload (metadata + data in one request), the body streamed from ``data``."""
        boundary = secrets.token_hex(16)
        metadata: dict[str, str] = {"name": full_key, "contentType": "application/octet-stream"}
        if self.config.storage_class:
            metadata["storageClass"] = self.config.storage_class
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(metadata)}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        params = {"uploadType": "multipart"}
        if if_absent:
            params["ifGenerationMatch"] = "0"
        headers = {
            **await self.auth(http),
            "Content-Type": f"multipart/related; boundary={boundary}",
            "Content-Length": str(len(head) + len(data) + len(tail)),
        }
        async with http.post(self.upload_url, params=params, headers=headers, data=pieces(head, data, tail)) as response:
            await raise_for_status(response)
            item: dict[str, Any] = await response.json(content_type=None)
            return item

    async def start_session(self, http: aiohttp.ClientSession, full_key: str) -> str:
        """A new resumable upload session for ``full_key``: its URI."""
        metadata: dict[str, str] = {"name": full_key, "contentType": "application/octet-stream"}
        if self.config.storage_class:
            metadata["storageClass"] = self.config.storage_class
        body = json.dumps(metadata).encode()
        headers = {
            **await self.auth(http),
            "Content-Type": "application/json; charset=UTF-8",
            "X-Upload-Content-Type": "application/octet-stream",
        }
        params = {"uploadType": "resumable", "name": full_key}
        async with http.post(self.upload_url, params=params, headers=headers, data=body) as response:
            await raise_for_status(response)
            location = response.headers.get("Location")
            if not location:
                raise StorageError(f"{self.name}: the service started a resumable upload without a session URI")
            return location

    async def cancel_session(self, http: aiohttp.ClientSession, session_uri: str) -> None:
        """Cancel a resumable session: the service drops what it received (499 is its success code).

        A session that is gone already (404/410, or any refusal of an already finalized one) is fine.
        """
        headers = {**await self.auth(http), "Content-Length": "0"}
        async with http.delete(session_uri, headers=headers) as response:
            if response.status in (401, 403) or response.status in TRANSIENT_STATUS:
                await raise_for_status(response)

    async def delete_generation(self, http: aiohttp.ClientSession, full_key: str, generation: str) -> None:
        """Delete one generation of an object, only if it is still the live one."""
        headers = await self.auth(http)
        params = {"ifGenerationMatch": generation}
        async with http.delete(self.object_url(full_key), headers=headers, params=params) as response:
            if response.status not in (404, 412):
                await raise_for_status(response)

    # -- the Storage contract ------------------------------------------------------------------

    async def open_writer(self, key: str) -> Any:
        from dbguardian.storage.gcs.resumable import GcsWriter

        return GcsWriter(self, key, self.full_key(key), chunk_size=self.config.chunk_size)

    async def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The object in ``chunk_size`` chunks (the last may be shorter).

        A download that breaks with a transient error resumes where it stopped, with a ranged GET of
        the generation it started on: an object replaced meanwhile fails instead of mixing versions.
        """
        url = self.object_url(self.full_key(key))
        received, total, generation = 0, -1, ""
        pending = bytearray()  # received, not yet yielded
        attempt = 1
        async with self.http() as http:
            while received != total:
                params = {"alt": "media"}
                try:
                    headers = await self.auth(http)
                    if total >= 0:
                        headers["Range"] = f"bytes={received}-"
                        if generation:
                            params["generation"] = generation
                    async with http.get(url, params=params, headers=headers) as response:
                        await raise_for_status(response)
                        if total < 0:
                            generation = response.headers.get("x-goog-generation", "")
                            length = response.headers.get("x-goog-stored-content-length") or response.headers.get(
                                "Content-Length"
                            )
                            total = int(length) if length is not None else -2  # -2: until the end of the body
                        while piece := await response.content.read(chunk_size - len(pending)):
                            pending += piece
                            received += len(piece)
                            attempt = 1
                            if len(pending) >= chunk_size:
                                chunk = bytes(pending)
                                pending.clear()
                                yield chunk
                        if total == -2:
                            total = received
                        elif received < total:
                            raise aiohttp.ClientPayloadError(f"the body ended at {received} of {total} bytes")
                except StorageError:
                    raise
                except Exception as error:
                    if attempt > self.config.retries or not is_transient(error):
                        raise self.error("read", key, error, attempt, not_found=total < 0) from None
                    log.warning("GCS download interrupted; resuming", storage=self.name, key=key, offset=received,
                                error=self.redact(str(error)))  # fmt: skip
                    await asyncio.sleep(self.retry_policy.delay(attempt))
                    attempt += 1
        if pending:
            yield bytes(pending)

    async def _list(
        self, prefix: str, *, delimiter: bool = False
    ) -> tuple[builtins.list[dict[str, Any]], builtins.list[str]]:
        """Every item and folder prefix under the full ``prefix`` (all pages)."""
        items: builtins.list[dict[str, Any]] = []
        prefixes: builtins.list[str] = []
        params = {"prefix": prefix, "fields": "items(name,size,updated,timeCreated),prefixes,nextPageToken"}
        if delimiter:
            params["delimiter"] = "/"
        async with self.http() as http:
            client = self.library(http)
            while True:
                page = await self.call(
                    "list",
                    prefix[len(self._root) :],
                    lambda: client.list_objects(self.bucket, params=dict(params), timeout=60),
                )
                items.extend(page.get("items", []))
                prefixes.extend(page.get("prefixes", []))
                token = page.get("nextPageToken")
                if not token:
                    break
                params["pageToken"] = token
        return items, prefixes

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        items, _ = await self._list(self._root + prefix)
        found = []
        for item in items:
            key = str(item["name"])[len(self._root) :]
            if key and not key.endswith("/") and not key.startswith(MARKERS):  # no folder placeholders, no markers
                found.append(ObjectInfo(key, int(item["size"]), parse_time(item.get("updated"))))
        return sorted(found, key=lambda info: info.key)

    async def stat(self, key: str) -> ObjectInfo:
        full_key = self.full_key(key)
        async with self.http() as http:
            client = self.library(http)
            item = await self.call(
                "stat", key, lambda: client.download_metadata(self.bucket, full_key, timeout=60), not_found=True
            )
        return ObjectInfo(key, int(item["size"]), parse_time(item.get("updated")))

    async def delete(self, key: str) -> None:
        full_key = self.full_key(key)
        async with self.http() as http:
            client = self.library(http)
            with contextlib.suppress(ObjectNotFound):  # deleting a missing key is not an error
                await self.call("delete", key, lambda: client.delete(self.bucket, full_key, timeout=60), not_found=True)

    async def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> ObjectInfo:
        """One multipart upload: GCS replaces objects atomically, readers never see a torn one.

        ``if_absent``: ``ifGenerationMatch=0``, the service refuses (412) when the key exists →
        ObjectExists. (A retry whose first attempt landed but whose answer was lost also sees 412: the
        caller must treat ObjectExists as "someone wrote this key", which includes itself.)
        """
        full_key = self.full_key(key)
        async with self.http() as http:

            async def put() -> dict[str, Any]:
                try:
                    return await self.upload_whole(http, full_key, data, if_absent=if_absent)
                except aiohttp.ClientResponseError as error:
                    if if_absent and error.status == 412:
                        raise ObjectExists(f"{self.name}: an object already exists at {key}") from None
                    raise

            item = await self.call("upload", key, put)
        return ObjectInfo(key, len(data), parse_time(item.get("updated")))

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Folder names directly below ``prefix``: objects.list with ``delimiter=/`` (its ``prefixes``)."""
        base = self._root + folder(prefix)
        _, prefixes = await self._list(base, delimiter=True)
        names = {name[len(base) :].rstrip("/") for name in prefixes}
        if not folder(prefix):
            names.discard(MARKERS.rstrip("/"))
        return sorted(name for name in names if name)

    async def get_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    async def abort_stale_uploads(self, older_than: datetime) -> builtins.list[str]:
        """Cancel resumable uploads started before ``older_than`` and never finished; their keys, sorted."""
        from dbguardian.storage.gcs.resumable import abort_stale_uploads

        return await abort_stale_uploads(self, older_than)


class _LibraryToken:
    """What gcloud-aio-storage asks of a token (``await get()``), answered from our cache."""

    def __init__(self, storage: GcsStorage, http: aiohttp.ClientSession) -> None:
        self._storage = storage
        self._http = http

    async def get(self) -> str | None:
        headers = await self._storage.auth(self._http)
        return headers.get("Authorization", "").removeprefix("Bearer ") or None
