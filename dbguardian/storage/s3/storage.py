"""Amazon S3 and S3-compatible stores (MinIO, Cloudflare R2, GCS interoperability, Ceph RGW).

Objects live under ``<prefix>/<key>`` in the bucket. Writes stream as multipart uploads (see
:mod:`dbguardian.storage.s3.multipart`); an object is visible only once its upload completes, so
there is no rename and in-progress writes never show up in listings. Capabilities
(:data:`~dbguardian.storage.s3.config.S3_CAPABILITIES`): delimiter listing (CommonPrefixes),
stale-upload cleanup (multipart uploads nobody completed or aborted), conditional put
(``If-None-Match: *``).

Clients: an aiobotocore client (and its aiohttp connection pool) belongs to one event loop and must
be closed. The storage therefore keeps no open client: every operation opens one with
``async with`` and closes it when done, and each writer holds its own client (with one connection
per part in flight, plus one) from its first request until commit or abort. Nothing needs a
``close()``, and a storage object survives several ``asyncio.run()`` calls. Opening a client
costs a few milliseconds (the service model is cached in the session; there is one session per
event loop) plus a new connection. Sessions load botocore's data lean (:mod:`dbguardian.storage.s3.models`:
6.3 MB instead of 14.9 MB of RSS for the first client).

Retries: only transient failures are retried, by the shared policy of :mod:`dbguardian.storage.retry`
(``retries`` from the policy; botocore's own retries are off so the classification below is the only one):
connection failures, timeouts, dropped or truncated responses, HTTP 429/500/502/503/504 and the
throttling/timeout error codes. Everything else (access denied, missing bucket, bad request,
missing credentials) fails at once. Reads resume a broken download where it stopped (ranged GET
pinned to the object's ETag).

Permissions needed: s3:PutObject, s3:GetObject, s3:DeleteObject, s3:ListBucket (without it a
missing key answers 403 instead of 404), s3:ListBucketMultipartUploads, s3:AbortMultipartUpload.

Checksums: against AWS (no ``endpoint_url``) uploads carry CRC32 checksums; with a custom
endpoint, botocore's checksums are only sent when an operation requires them, since several
S3-compatible stores reject the newer checksum headers.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import aioboto3
import aiohttp
import botocore.exceptions as boto_errors
from aiobotocore.config import AioConfig

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.logs import get_logger
from dbguardian.storage import retry
from dbguardian.storage.base import READ_CHUNK, ObjectInfo, check_key, folder
from dbguardian.storage.retry import RetryPolicy
from dbguardian.storage.s3.config import S3_CAPABILITIES, S3StorageConfig
from dbguardian.storage.s3.models import lean_session
from dbguardian.storage.s3.multipart import MAX_PART_SIZE, S3Writer, part_size_for

log = get_logger("dbguardian.storage.s3")

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "ConditionalRequestConflict",  # 409: a concurrent conditional write; AWS says retry
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
    }
)
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    boto_errors.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ...
    boto_errors.HTTPClientError,  # ConnectionClosedError, ReadTimeoutError, ResponseStreamingError
    boto_errors.IncompleteReadError,
    aiohttp.ClientError,  # payload errors while streaming a body
    ConnectionError,
    TimeoutError,
)


def error_code(error: BaseException) -> str:
    if isinstance(error, boto_errors.ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(error: BaseException) -> int | None:
    if isinstance(error, boto_errors.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same request may succeed."""
    if retry.is_transient(error):
        return True
    if isinstance(error, boto_errors.ClientError):
        return error_code(error) in TRANSIENT_CODES or http_status(error) in TRANSIENT_STATUS
    return isinstance(error, TRANSIENT_EXCEPTIONS)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class S3Storage:
    capabilities = S3_CAPABILITIES

    def __init__(
        self,
        name: str,
        config: S3StorageConfig,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        checksums: bool | None = None,
    ) -> None:
        """``checksums``: send CRC32 checksums with uploads (default: only against AWS itself)."""
        part_size_for(1, config.part_size)  # validates, also for configs built without the policy
        if config.sse_kms_key_id is not None and config.sse != "aws:kms":
            raise StorageError(f"{name}: sse_kms_key_id needs sse: aws:kms")
        self.name = name
        self.config = config
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self.checksums = config.endpoint_url is None if checksums is None else checksums
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.retry_policy = RetryPolicy(config.retries, wait_initial=backoff_base, wait_max=backoff_max)
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._secrets: tuple[str, ...] = ()

    def describe(self) -> str:
        where = self.config.endpoint_url or f"AWS {self.config.region}"
        return f"{self.name} (s3://{self.bucket}/{self._root} at {where})"

    def _full_key(self, key: str) -> str:
        return self._root + check_key(key)

    # -- clients, retries, errors ------------------------------------------------------------

    def _credentials(self) -> dict[str, str]:
        """Keys from the configured files (read on every client, so rotated files are picked up)."""
        id_file, secret_file = self.config.access_key_id_file, self.config.secret_access_key_file
        if id_file is None or secret_file is None:
            return {}  # the standard AWS chain: environment, shared config, container/instance role
        values = []
        for label, path in (("access_key_id_file", id_file), ("secret_access_key_file", secret_file)):
            try:
                value = path.read_text().strip()
            except OSError as error:
                raise StorageError(f"{self.name}: cannot read {label} {path}: {error.strerror}") from None
            if not value:
                raise StorageError(f"{self.name}: {label} {path} is empty")
            values.append(value)
        self._secrets = tuple(values)
        return {"aws_access_key_id": values[0], "aws_secret_access_key": values[1]}

    @contextlib.asynccontextmanager
    async def client(self, connections: int = 1) -> AsyncIterator[Any]:
        """A fresh S3 client for the running event loop, closed on exit."""
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            session = self._sessions[loop] = aioboto3.Session(botocore_session=lean_session())
        checksum_mode = "when_supported" if self.checksums else "when_required"
        config = AioConfig(
            region_name=self.config.region,
            s3={"addressing_style": self.config.addressing_style},
            retries={"total_max_attempts": 1},  # our own retries, see is_transient
            max_pool_connections=max(connections, 1),
            connect_timeout=20,
            read_timeout=60,
            request_checksum_calculation=checksum_mode,
            response_checksum_validation=checksum_mode,
        )
        stack = contextlib.AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                session.client("s3", endpoint_url=self.config.endpoint_url, config=config, **self._credentials())
            )
        except (boto_errors.BotoCoreError, ValueError) as error:
            raise StorageError(
                self._redact(f"{self.name}: cannot set up an S3 client for {self.describe()}: {error}")
            ) from None
        async with stack:
            yield client

    def _redact(self, text: str) -> str:
        text = _one_line(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def error(
        self, action: str, key: str, error: BaseException, attempts: int = 1, *, not_found: bool = False
    ) -> StorageError:
        """One operator-readable line naming the storage, bucket and key; never credentials."""
        location = f"s3://{self.bucket}/{self._root}{key}"
        code = error_code(error)
        if not_found and code in NOT_FOUND_CODES:
            return ObjectNotFound(f"{self.name}: no object {key} ({location})")
        if isinstance(error, boto_errors.ClientError):
            info = error.response.get("Error", {})
            message = str(info.get("Message") or "").strip()
            if code == "NoSuchBucket":
                reason = f"bucket {self.bucket} does not exist"
            else:
                reason = f"{code or 'error'} (HTTP {http_status(error)})" + (
                    f": {message}" if message and message != code else ""
                )
        elif isinstance(error, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
            reason = (
                "no AWS credentials (set access_key_id_file/secret_access_key_file or the standard AWS credential chain)"
            )
        elif isinstance(error, boto_errors.BotoCoreError):
            reason = str(error)
        else:
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if attempts > 1:
            reason += f" (gave up after {attempts} attempts)"
        return StorageError(self._redact(f"{self.name}: cannot {action} {location}: {reason}"))

    async def call(self, action: str, key: str, operation: Callable[[], Awaitable[T]], *, not_found: bool = False) -> T:
        """Run one S3 request, retrying transient failures; any failure becomes a StorageError."""

        def retrying(error: Exception, attempt: int, delay: float) -> None:
            log.warning(
                "transient S3 error; retrying",
                storage=self.name,
                action=action,
                key=key,
                attempt=attempt,
                delay=round(delay, 3),
                error=self._redact(str(error)),
            )

        def give_up(error: Exception, attempts: int) -> BaseException:
            if isinstance(error, StorageError):
                return error
            return self.error(action, key, error, attempts, not_found=not_found)

        return await retry.call(operation, self.retry_policy, transient=is_transient, on_retry=retrying, on_give_up=give_up)

    def object_params(self) -> dict[str, str]:
        """Parameters of PutObject/CreateMultipartUpload: storage class, encryption, checksum."""
        params: dict[str, str] = {"ChecksumAlgorithm": "CRC32"} if self.checksums else {}
        if self.config.storage_class:
            params["StorageClass"] = self.config.storage_class
        if self.config.sse:
            params["ServerSideEncryption"] = self.config.sse
            if self.config.sse_kms_key_id:
                params["SSEKMSKeyId"] = self.config.sse_kms_key_id
        return params

    # -- the Storage contract ----------------------------------------------------------------

    async def open_writer(self, key: str) -> S3Writer:
        return S3Writer(
            self,
            key,
            self._full_key(key),
            part_size=self.config.part_size,
            max_inflight=self.config.max_inflight_parts,
        )

    async def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The object in ``chunk_size`` chunks (the last may be shorter).

        A download that breaks with a transient error resumes where it stopped, with a ranged GET
        pinned to the object's ETag: an object replaced meanwhile fails instead of mixing versions.
        """
        full_key = self._full_key(key)
        received, total, etag = 0, -1, ""
        pending = bytearray()  # received, not yet yielded
        attempt = 1
        async with self.client() as client:
            while received != total:
                params = {"Bucket": self.bucket, "Key": full_key}
                if total >= 0:
                    params["Range"] = f"bytes={received}-"
                    if etag:
                        params["IfMatch"] = etag
                try:
                    response = await client.get_object(**params)
                    body = response["Body"]
                    try:
                        if total < 0:
                            total, etag = int(response["ContentLength"]), str(response.get("ETag") or "")
                        while piece := await body.read(chunk_size - len(pending)):
                            pending += piece
                            received += len(piece)
                            attempt = 1
                            if len(pending) >= chunk_size:
                                chunk = bytes(pending)
                                pending.clear()
                                yield chunk
                    finally:
                        body.close()
                except Exception as error:
                    if attempt > self.config.retries or not is_transient(error):
                        raise self.error("read", key, error, attempt, not_found=total < 0) from None
                    log.warning(
                        "S3 download interrupted; resuming", storage=self.name, key=key, offset=received, error=str(error)
                    )
                    # Resumed, not re-sent: the same policy's waits, counted per stretch without progress.
                    await asyncio.sleep(self.retry_policy.delay(attempt))
                    attempt += 1
        if pending:
            yield bytes(pending)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        async with self.client() as client:
            params = {"Bucket": self.bucket, "Prefix": self._root + prefix}
            while True:
                page = await self.call("list", prefix, partial(client.list_objects_v2, **params))
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self._root) :]
                    if key and not key.endswith("/"):  # skip "folder" markers made by consoles
                        found.append(ObjectInfo(key, int(item["Size"]), _utc(item["LastModified"])))
                if not page.get("IsTruncated"):
                    break
                params["ContinuationToken"] = page["NextContinuationToken"]
        return sorted(found, key=lambda info: info.key)

    async def stat(self, key: str) -> ObjectInfo:
        full_key = self._full_key(key)
        async with self.client() as client:
            head = await self.call(
                "stat", key, partial(client.head_object, Bucket=self.bucket, Key=full_key), not_found=True
            )
        return ObjectInfo(key, int(head["ContentLength"]), _utc(head["LastModified"]))

    async def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        async with self.client() as client:
            with contextlib.suppress(ObjectNotFound):  # S3 itself answers 204; some compatibles say 404
                await self.call(
                    "delete", key, partial(client.delete_object, Bucket=self.bucket, Key=full_key), not_found=True
                )

    async def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> ObjectInfo:
        """A single PutObject: S3 replaces objects atomically, readers never see a torn one.

        ``if_absent``: ``If-None-Match: *``, S3 refuses (412) when the key exists → ObjectExists. (A
        retry whose first attempt landed but whose answer was lost also sees 412: the caller must treat
        ObjectExists as "someone wrote this key", which includes itself.)
        """
        full_key = self._full_key(key)
        if len(data) > MAX_PART_SIZE:
            raise StorageError(f"{self.name}: {key} is too large for a single upload ({len(data)} bytes)")
        params = {"Bucket": self.bucket, "Key": full_key, "Body": data, **self.object_params()}
        if if_absent:
            params["IfNoneMatch"] = "*"
        async with self.client() as client:

            async def put() -> object:
                try:
                    return await client.put_object(**params)
                except boto_errors.ClientError as error:
                    if if_absent and (error_code(error) == "PreconditionFailed" or http_status(error) == 412):
                        raise ObjectExists(f"{self.name}: an object already exists at {key}") from None
                    raise

            await self.call("upload", key, put)
        return ObjectInfo(key, len(data), datetime.now(UTC))

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Folder names directly below ``prefix``: ListObjectsV2 with ``Delimiter="/"`` (CommonPrefixes)."""
        base = self._root + folder(prefix)
        names: builtins.list[str] = []
        async with self.client() as client:
            params = {"Bucket": self.bucket, "Prefix": base, "Delimiter": "/"}
            while True:
                page = await self.call("list folders under", prefix, partial(client.list_objects_v2, **params))
                names.extend(str(item["Prefix"])[len(base) :].rstrip("/") for item in page.get("CommonPrefixes", []))
                if not page.get("IsTruncated"):
                    break
                params["ContinuationToken"] = page["NextContinuationToken"]
        return sorted(name for name in names if name)

    async def get_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    async def abort_stale_uploads(self, older_than: datetime) -> builtins.list[str]:
        """Abort multipart uploads under the prefix started before ``older_than``; their keys, sorted.

        Uploads left by a crash or by an abort that could not reach the store are invisible but
        billed; prune calls this with ``now - leftover_grace``, so running uploads are left alone.
        """
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=UTC)
        stale: builtins.list[tuple[str, str]] = []
        aborted: builtins.list[str] = []
        async with self.client() as client:
            params = {"Bucket": self.bucket, "Prefix": self._root}
            while True:
                page = await self.call("list multipart uploads under", "", partial(client.list_multipart_uploads, **params))
                for upload in page.get("Uploads", []):
                    if _utc(upload["Initiated"]) < older_than:
                        stale.append((str(upload["Key"]), str(upload["UploadId"])))
                if not page.get("IsTruncated"):
                    break
                params["KeyMarker"] = page["NextKeyMarker"]
                params["UploadIdMarker"] = page["NextUploadIdMarker"]
            for full_key, upload_id in stale:
                key = full_key[len(self._root) :]
                operation = partial(client.abort_multipart_upload, Bucket=self.bucket, Key=full_key, UploadId=upload_id)
                with contextlib.suppress(ObjectNotFound):  # finished or aborted meanwhile
                    await self.call("abort the stale multipart upload of", key, operation, not_found=True)
                    aborted.append(key)
                    log.info("aborted a stale multipart upload", storage=self.name, key=key, upload_id=upload_id)
        return sorted(aborted)
