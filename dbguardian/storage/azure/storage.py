"""Azure Blob Storage (block blobs), through azure-storage-blob's async client.

Objects are block blobs named ``<prefix>/<key>`` in the container. Writes stage blocks and commit
the block list (:mod:`dbguardian.storage.azure.blocks`); an object is visible only once committed,
so there is no rename and in-progress writes never show up in listings. Capabilities
(:data:`~dbguardian.storage.azure.config.AZURE_CAPABILITIES`): delimiter listing (BlobPrefix),
stale-upload cleanup (blobs that hold only uncommitted blocks), conditional put (``If-None-Match: *``).

Credentials, in this order: ``connection_string_file`` (account name + key, or a SAS, and the
endpoint); ``sas_token_file`` with ``account_url``; else ``DefaultAzureCredential`` from
``azure.identity.aio`` with ``account_url`` (environment: AZURE_TENANT_ID/AZURE_CLIENT_ID with
AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH; workload identity on AKS:
AZURE_FEDERATED_TOKEN_FILE; the VM's/pod's managed identity, a user-assigned one chosen by
AZURE_CLIENT_ID; then developer logins such as the Azure CLI). Files are read on every client, so
rotated secrets are picked up. A token from the chain is kept (:class:`CachedTokenCredential`) until
five minutes before it expires, across clients and event loops.

Clients: like S3, the storage keeps no open client: every operation opens one (``async with``) and
each writer holds its own from its first request until commit or abort, so a storage object needs
no ``close()`` and survives several ``asyncio.run()`` calls.

Retries: the SDK's own retries are off (``retry_total=0``); transient failures go through the shared
policy of :mod:`dbguardian.storage.retry` (``retries`` from the policy): connection failures,
timeouts, dropped or truncated responses, HTTP 408/429/500/502/503/504 and the service's
ServerBusy/OperationTimedOut/InternalError codes. Everything else fails at once. Reads resume a
broken download where it stopped (ranged GET pinned to the blob's ETag).

Logging: the SDK's network trace (which can print headers) is never enabled (``logging_enable``
off), and its per-request INFO log (``azure.core.pipeline.policies.http_logging_policy``, URLs with
the SAS redacted) is raised to WARNING: no request line of the SDK reaches a log. Errors are one
line without keys, SAS tokens or connection strings (:meth:`AzureStorage._redact`).

Permissions needed (Azure RBAC on the container or account): the role "Storage Blob Data
Contributor" (read, write, delete, list blobs). With a SAS: permissions ``racwdl`` on the container.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from azure.core import MatchConditions
from azure.core.credentials import AccessToken, AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import StandardBlobTier
from azure.storage.blob.aio import BlobClient, BlobPrefix, BlobServiceClient, ContainerClient

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.logs import get_logger, register_secret
from dbguardian.storage import retry
from dbguardian.storage.azure.blocks import AzureWriter, block_size_for
from dbguardian.storage.azure.config import AZURE_CAPABILITIES, AzureStorageConfig
from dbguardian.storage.base import READ_CHUNK, ObjectInfo, check_key, folder
from dbguardian.storage.retry import RetryPolicy

log = get_logger("dbguardian.storage.azure")

# The SDK logs every request at INFO here (URL, headers; SAS and Authorization redacted): noise at best.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})
NOT_FOUND_CODES = frozenset({"BlobNotFound"})
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    ServiceRequestError,  # could not send: connection refused/reset, DNS, connect timeout
    ServiceResponseError,  # no (whole) answer: connection dropped, read timeout
    aiohttp.ClientError,
    ConnectionError,
    TimeoutError,
)
DOWNLOAD_CHUNK = 4 * 1024 * 1024
TOKEN_MARGIN = 300.0  # seconds before expiry when a cached token is replaced


def error_code(error: BaseException) -> str:
    return str(getattr(error, "error_code", None) or "") if isinstance(error, HttpResponseError) else ""


def http_status(error: BaseException) -> int | None:
    return getattr(error, "status_code", None) if isinstance(error, HttpResponseError) else None


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same request may succeed."""
    if retry.is_transient(error):
        return True
    if isinstance(error, ClientAuthenticationError):
        return False
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        return error_code(error) in TRANSIENT_CODES or error.status_code in TRANSIENT_STATUS
    # A body cut short or garbled on the way (IncompleteReadError is a DecodeError).
    return isinstance(error, (DecodeError, *TRANSIENT_EXCEPTIONS))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _one_line(text: str) -> str:
    return " ".join(text.split())


class CachedTokenCredential:
    """An async token credential that keeps tokens until shortly before they expire.

    Every storage operation opens its own client, whose bearer-token policy would otherwise ask the
    credential chain (a managed-identity endpoint, Entra ID) for a token each time. ``make()`` builds
    the real credential (``DefaultAzureCredential``) only when a token is needed, and it is closed
    right after, so no HTTP session outlives the event loop that made it.
    """

    def __init__(self, make: Callable[[], Any], *, clock: Callable[[], float] = time.time) -> None:
        self._make = make
        self._clock = clock
        self._tokens: dict[tuple[str, ...], AccessToken] = {}

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        cached = self._tokens.get(scopes)
        if cached is not None and not kwargs.get("claims") and cached.expires_on - TOKEN_MARGIN > self._clock():
            return cached
        async with self._make() as credential:
            token: AccessToken = await credential.get_token(*scopes, **kwargs)
        self._tokens[scopes] = token
        return token

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> CachedTokenCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _default_credential() -> Any:
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


class AzureStorage:
    capabilities = AZURE_CAPABILITIES

    def __init__(
        self,
        name: str,
        config: AzureStorageConfig,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        credential: Any = None,
    ) -> None:
        """``credential``: an async token credential to use instead of the default chain (tests)."""
        block_size_for(1, config.block_size)  # validates, also for configs built without the policy
        self.name = name
        self.config = config
        self.container = config.container
        self.prefix = config.prefix.strip("/")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.retry_policy = RetryPolicy(config.retries, wait_initial=backoff_base, wait_max=backoff_max)
        self._token_credential = credential or CachedTokenCredential(_default_credential)
        self._secrets: tuple[str, ...] = ()
        self._endpoint = config.account_url

    def describe(self) -> str:
        where = self._endpoint or "the account of its connection string"
        return f"{self.name} (azure container {self.container}/{self._root} at {where})"

    def _full_key(self, key: str) -> str:
        return self._root + check_key(key)

    # -- clients, retries, errors ------------------------------------------------------------

    def _read_secret(self, label: str, path: Any) -> str:
        try:
            value = str(path.read_text()).strip()
        except OSError as error:
            raise StorageError(f"{self.name}: cannot read {label} {path}: {error.strerror}") from None
        if not value:
            raise StorageError(f"{self.name}: {label} {path} is empty")
        return value

    def _remember(self, *values: str) -> None:
        """Secrets to mask in our errors and in every structlog line."""
        found = tuple(value for value in values if value and len(value) >= 8)
        self._secrets = tuple(sorted(set(self._secrets) | set(found), key=len, reverse=True))
        for value in found:
            register_secret(value)

    @contextlib.asynccontextmanager
    async def service(self, connections: int = 1) -> AsyncIterator[BlobServiceClient]:
        """A fresh service client for the running event loop, closed on exit."""
        options: dict[str, Any] = {
            "retry_total": 0,  # our own retries, see is_transient
            "logging_enable": False,
            "connection_timeout": 20,
            "read_timeout": 60,
            "max_single_get_size": DOWNLOAD_CHUNK,
            "max_chunk_get_size": DOWNLOAD_CHUNK,
            "max_single_put_size": 64 * 1024 * 1024,
        }
        connection_string_file, sas_file = self.config.connection_string_file, self.config.sas_token_file
        try:
            if connection_string_file is not None:
                text = self._read_secret("connection_string_file", connection_string_file)
                fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
                self._remember(text, fields.get("AccountKey", ""), fields.get("SharedAccessSignature", ""))
                client = BlobServiceClient.from_connection_string(text, **options)
                self._endpoint = client.url.split("?")[0].rstrip("/")
            elif sas_file is not None:
                token = self._read_secret("sas_token_file", sas_file).lstrip("?")
                signature = dict(part.split("=", 1) for part in token.split("&") if "=" in part).get("sig", "")
                self._remember(token, signature)
                client = BlobServiceClient(str(self.config.account_url), credential=AzureSasCredential(token), **options)
            else:
                client = BlobServiceClient(str(self.config.account_url), credential=self._token_credential, **options)
        except (ValueError, TypeError) as error:
            raise StorageError(self._redact(f"{self.name}: cannot set up an Azure client: {error}")) from None
        async with client:
            yield client

    @contextlib.asynccontextmanager
    async def container_client(self) -> AsyncIterator[ContainerClient]:
        async with self.service() as service:
            yield service.get_container_client(self.container)

    @contextlib.asynccontextmanager
    async def blob(self, full_key: str, connections: int = 1) -> AsyncIterator[BlobClient]:
        async with self.service(connections) as service:
            yield service.get_blob_client(self.container, full_key)

    def _redact(self, text: str) -> str:
        text = _one_line(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _first_line(self, error: BaseException) -> str:
        text = str(error).strip()
        return self._redact(text.splitlines()[0] if text else type(error).__name__)

    def error(
        self, action: str, key: str, error: BaseException, attempts: int = 1, *, not_found: bool = False
    ) -> StorageError:
        """One operator-readable line naming the storage, container and key; never credentials."""
        location = f"azure://{self.container}/{self._root}{key}"
        code = error_code(error)
        if not_found and code in NOT_FOUND_CODES | {"ResourceNotFound"}:
            return ObjectNotFound(f"{self.name}: no object {key} ({location})")
        if isinstance(error, HttpResponseError) and error.status_code is not None:
            message = str(error.message or "").strip().splitlines()[0] if error.message else ""
            if code == "ContainerNotFound":
                reason = f"container {self.container} does not exist"
            elif code == "BlobArchived":
                reason = "the blob is in the Archive tier (rehydrate it to Hot or Cool first)"
            else:
                reason = f"{code or 'error'} (HTTP {error.status_code})" + (
                    f": {message}" if message and message != code else ""
                )
        elif isinstance(error, ClientAuthenticationError) or type(error).__name__ == "CredentialUnavailableError":
            reason = (
                "no usable Azure credential (set connection_string_file or sas_token_file, or give the default "
                f"credential chain a service principal, workload or managed identity): {str(error).splitlines()[0]}"
            )
        elif isinstance(error, AzureError):
            reason = str(error.message or type(error).__name__).splitlines()[0]
        else:
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if attempts > 1:
            reason += f" (gave up after {attempts} attempts)"
        return StorageError(self._redact(f"{self.name}: cannot {action} {location}: {reason}"))

    async def call(self, action: str, key: str, operation: Callable[[], Awaitable[T]], *, not_found: bool = False) -> T:
        """Run one request, retrying transient failures; any failure becomes a StorageError."""

        def retrying(error: Exception, attempt: int, delay: float) -> None:
            log.warning(
                "transient Azure error; retrying",
                storage=self.name,
                action=action,
                key=key,
                attempt=attempt,
                delay=round(delay, 3),
                error=self._first_line(error),
            )

        def give_up(error: Exception, attempts: int) -> BaseException:
            if isinstance(error, StorageError):
                return error
            return self.error(action, key, error, attempts, not_found=not_found)

        return await retry.call(operation, self.retry_policy, transient=is_transient, on_retry=retrying, on_give_up=give_up)

    def upload_params(self) -> dict[str, Any]:
        """Parameters of Put Blob / Put Block List: the access tier."""
        tier = self.config.access_tier
        return {"standard_blob_tier": StandardBlobTier(tier)} if tier else {}

    # -- the Storage contract ----------------------------------------------------------------

    async def open_writer(self, key: str) -> AzureWriter:
        return AzureWriter(
            self, key, self._full_key(key), block_size=self.config.block_size, max_inflight=self.config.max_inflight_blocks
        )

    async def read(self, key: str, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The object in ``chunk_size`` chunks (the last may be shorter).

        A download that breaks with a transient error resumes where it stopped, pinned to the blob's
        ETag: a blob replaced meanwhile fails instead of mixing versions.
        """
        full_key = self._full_key(key)
        received, total, etag = 0, -1, ""
        pending = bytearray()
        attempt = 1
        async with self.blob(full_key) as client:
            while received != total:
                conditions: dict[str, Any] = {}
                if total >= 0 and etag:
                    conditions = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
                try:
                    downloader = await client.download_blob(offset=received if total >= 0 else None, max_concurrency=1,
                                                            **conditions)  # fmt: skip
                    if total < 0:
                        total, etag = int(downloader.size), str(downloader.properties.etag or "")
                    async for piece in downloader.chunks():
                        view = memoryview(piece)
                        while view:
                            taken = view[: chunk_size - len(pending)]
                            pending += taken
                            received += len(taken)
                            view = view[len(taken) :]
                            attempt = 1
                            if len(pending) >= chunk_size:
                                chunk = bytes(pending)
                                pending.clear()
                                yield chunk
                    if total == 0:
                        break
                except Exception as error:
                    if attempt > self.config.retries or not is_transient(error):
                        raise self.error("read", key, error, attempt, not_found=total < 0) from None
                    log.warning("Azure download interrupted; resuming", storage=self.name, key=key, offset=received,
                                error=self._first_line(error))  # fmt: skip
                    await asyncio.sleep(self.retry_policy.delay(attempt))
                    attempt += 1
        if pending:
            yield bytes(pending)

    async def _list(self, name_prefix: str, *, uncommitted: bool = False) -> builtins.list[Any]:
        include = ["uncommittedblobs"] if uncommitted else None
        async with self.container_client() as container:

            async def listing() -> builtins.list[Any]:
                return [item async for item in container.list_blobs(name_starts_with=name_prefix, include=include)]

            return await self.call("list", name_prefix[len(self._root) :], listing)

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        found = [
            ObjectInfo(item.name[len(self._root) :], int(item.size), _utc(item.last_modified))
            for item in await self._list(self._root + prefix)
            if not item.name.endswith("/")  # skip "folder" markers made by tools
        ]
        return sorted(found, key=lambda info: info.key)

    async def stat(self, key: str) -> ObjectInfo:
        async with self.blob(self._full_key(key)) as client:
            props = await self.call("stat", key, client.get_blob_properties, not_found=True)
        return ObjectInfo(key, int(props.size), _utc(props.last_modified))

    async def delete(self, key: str) -> None:
        async with self.blob(self._full_key(key)) as client:
            with contextlib.suppress(ObjectNotFound):
                await self.call("delete", key, lambda: client.delete_blob(delete_snapshots="include"), not_found=True)

    async def put_bytes(self, key: str, data: bytes, if_absent: bool = False) -> ObjectInfo:
        """A single Put Blob: the service replaces blobs atomically, readers never see a torn one.

        ``if_absent``: ``overwrite=False`` sends ``If-None-Match: *``; the service refuses (409
        BlobAlreadyExists) when the key exists → ObjectExists. (A retry whose first attempt landed but
        whose answer was lost is refused too: the caller treats ObjectExists as "someone wrote this key",
        which includes itself.)
        """
        params = self.upload_params()
        async with self.blob(self._full_key(key)) as client:

            async def put() -> object:
                try:
                    return await client.upload_blob(data, length=len(data), overwrite=not if_absent, max_concurrency=1,
                                                    validate_content=True, **params)  # fmt: skip
                except ResourceExistsError as error:
                    if if_absent and error_code(error) in ("BlobAlreadyExists", "ConditionNotMet"):
                        raise ObjectExists(f"{self.name}: an object already exists at {key}") from None
                    raise

            await self.call("upload", key, put)
        return ObjectInfo(key, len(data), datetime.now(UTC))

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Folder names directly below ``prefix``: List Blobs with delimiter ``/`` (BlobPrefix entries)."""
        base = self._root + folder(prefix)
        async with self.container_client() as container:

            async def walk() -> builtins.list[str]:
                return [item.name async for item in container.walk_blobs(name_starts_with=base, delimiter="/")
                        if isinstance(item, BlobPrefix)]  # fmt: skip

            names = await self.call("list folders under", prefix, walk)
        return sorted(name for name in (name[len(base) :].rstrip("/") for name in names) if name)

    async def get_bytes(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.read(key)])

    async def abort_stale_uploads(self, older_than: datetime) -> builtins.list[str]:
        """Delete blobs under the prefix that hold only uncommitted blocks, last touched before ``older_than``.

        They are listed only with ``include=["uncommittedblobs"]``: a name there but not in the plain
        listing (taken after it) holds nothing committed. The delete is conditional on the blob being
        unmodified since ``older_than``, so a blob committed in between is never deleted. Uncommitted
        blocks of a *committed* blob (an aborted replacement) are not listed; the service discards them.
        """
        if older_than.tzinfo is None:
            older_than = older_than.replace(tzinfo=UTC)
        with_uncommitted = await self._list(self._root, uncommitted=True)
        committed = {item.name for item in await self._list(self._root)}
        stale = sorted(item.name for item in with_uncommitted
                       if item.name not in committed and _utc(item.last_modified) < older_than)  # fmt: skip
        aborted: builtins.list[str] = []
        for full_key in stale:
            key = full_key[len(self._root) :]
            async with self.blob(full_key) as client:

                async def delete(client: BlobClient = client) -> bool:
                    try:
                        await client.delete_blob(if_unmodified_since=older_than)
                    except ResourceModifiedError:
                        return False  # committed (or staged to) since: not stale
                    return True

                try:
                    if not await self.call("delete the stale uncommitted blocks of", key, delete, not_found=True):
                        continue
                except ObjectNotFound:
                    continue  # removed meanwhile
            aborted.append(key)
            log.info("deleted the uncommitted blocks of a stale upload", storage=self.name, key=key)
        return aborted
