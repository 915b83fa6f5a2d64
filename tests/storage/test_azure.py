"""The Azure backend against Azurite over real HTTP: block uploads, backpressure, abort, cancellation,
killed writers and stale uploads, outages, credentials and what reaches the logs.

Network trouble is made by the TCP proxy of test_s3.py (:class:`Proxy`) between the storage and
Azurite. Client-side concurrency is observed by wrapping the SDK's ``stage_block``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from azure.storage.blob.aio import BlobClient
from pydantic import ValidationError

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.storage.azure.blocks import BLOCKS_PER_DOUBLING, MAX_BLOCKS, block_size_for
from dbguardian.storage.azure.config import MAX_BLOCK_SIZE, AzureStorageConfig
from dbguardian.storage.azure.storage import AzureStorage, CachedTokenCredential, is_transient
from tests.storage.azure_fixtures import ACCOUNT, ACCOUNT_KEY, AZURE_PREFIX, AzureFactory, Azurite
from tests.storage.test_s3 import Proxy, uneven_chunks

MiB = 1024 * 1024


# -- helpers -----------------------------------------------------------------------------------


def blobs(azurite: Azurite, container: str, *, uncommitted: bool = False) -> list[str]:
    """Blob names behind the storage's back; with ``uncommitted``, blobs holding only staged blocks too."""
    client = azurite.client().get_container_client(container)
    return sorted(item.name for item in client.list_blobs(include=["uncommittedblobs"] if uncommitted else None))


def through(azurite: Azurite, proxy: Proxy, tmp_path: Path) -> Path:
    """A connection-string file pointing at the proxy in front of Azurite."""
    path = tmp_path / f"cs-{proxy.url.rsplit(':', 1)[1]}"
    path.write_text(azurite.connection_string(f"{proxy.url}/{ACCOUNT}"))
    return path


def outage(proxy: Proxy) -> None:
    """The service becomes unreachable: new connections are dropped, and so are the open ones."""
    proxy.refuse = True
    for writer in list(proxy._open):
        writer.transport.abort()


@dataclass
class StageLog:
    delay: float = 0.0
    active: int = 0
    peak: int = 0
    finished: int = 0
    started: int = 0
    entered: asyncio.Event | None = None
    """Set when block number ``entered_at`` starts staging."""
    entered_at: int = 1


@pytest.fixture
def stage_log(monkeypatch: pytest.MonkeyPatch) -> StageLog:
    """Wraps the SDK's stage_block: how many run at once; optionally slow (sleeps before sending)."""
    seen = StageLog()
    original = BlobClient.stage_block

    async def stage_block(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.active += 1
        seen.started += 1
        seen.peak = max(seen.peak, seen.active)
        if seen.entered is not None and seen.started >= seen.entered_at:
            seen.entered.set()
        try:
            await asyncio.sleep(seen.delay)
            return await original(self, *args, **kwargs)
        finally:
            seen.active -= 1
            seen.finished += 1

    monkeypatch.setattr(BlobClient, "stage_block", stage_block)
    return seen


# -- the block-size scheme and the config -------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "base", "size"),
    [(1, 4 * MiB, 4 * MiB), (5000, 4 * MiB, 4 * MiB), (5001, 4 * MiB, 8 * MiB), (50_000, 4 * MiB, 2048 * MiB),
     (50_000, 100 * MiB, MAX_BLOCK_SIZE), (1, MiB, MiB)],
)  # fmt: skip
def test_block_size_table(number: int, base: int, size: int) -> None:
    assert block_size_for(number, base) == size


def test_blocks_hold_terabytes() -> None:
    def capacity(base: int) -> int:
        return sum(block_size_for(n, base) * BLOCKS_PER_DOUBLING for n in range(1, MAX_BLOCKS, BLOCKS_PER_DOUBLING))

    assert capacity(MiB) > 4.8 * 1024**4  # from the smallest block size
    assert capacity(4 * MiB) > 19 * 1024**4  # from the default
    with pytest.raises(ValueError, match="outside"):
        block_size_for(MAX_BLOCKS + 1, MiB)


def test_config_checks(tmp_path: Path) -> None:
    base = {"type": "azure", "container": "backups", "account_url": "https://acct.blob.core.windows.net/"}
    assert AzureStorageConfig.model_validate(base).account_url == "https://acct.blob.core.windows.net"
    assert AzureStorageConfig.model_validate({**base, "block_size": "8MiB", "access_tier": "Cold"}).block_size == 8 * MiB
    cases: list[tuple[dict[str, Any], str]] = [
        ({"access_tier": "Archive"}, "Archive is not allowed"),
        ({"container": "Backups"}, "lowercase"),
        ({"block_size": "512KiB"}, "between 1MB and 4000MB"),
        ({"account_url": "https://acct.blob.core.windows.net/?sv=x&sig=y"}, "no query string"),
        ({"connection_string_file": str(tmp_path / "cs")}, "not both"),
        ({"account_url": None}, "set account_url"),
        ({"sas_token_file": "/a", "connection_string_file": "/b", "account_url": None}, "not both"),
    ]
    for bad, message in cases:
        with pytest.raises(ValidationError, match=message):
            AzureStorageConfig.model_validate({**base, **bad})


def test_transient_errors_are_told_apart() -> None:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    def response_error(status: int, code: str) -> HttpResponseError:
        error = HttpResponseError(message=code)
        error.status_code = status
        error.error_code = code  # type: ignore[attr-defined]  # set by the storage SDK's error handling
        return error

    assert is_transient(ServiceRequestError("connection refused"))
    assert is_transient(ServiceResponseError("connection reset"))
    assert is_transient(response_error(503, "ServerBusy"))
    assert is_transient(response_error(500, "InternalError"))
    assert is_transient(response_error(429, "TooManyRequests"))
    assert not is_transient(response_error(404, "BlobNotFound"))
    assert not is_transient(response_error(403, "AuthorizationFailure"))
    assert not is_transient(ResourceNotFoundError(message="gone"))
    assert not is_transient(ClientAuthenticationError(message="bad key"))
    assert not is_transient(ValueError("bad"))


# -- uploads ------------------------------------------------------------------------------------


def test_block_upload_round_trip_with_tier(make_azure: AzureFactory, azurite: Azurite, azure_container: str) -> None:
    storage = make_azure(access_tier="Cool")
    data = os.urandom(5 * MiB + 123)

    async def scenario() -> None:
        writer = await storage.open_writer("t/rt/dump")
        for chunk in uneven_chunks(data):
            await writer.write(chunk)
        info = await writer.commit()
        assert info.size == len(data)
        assert await storage.get_bytes("t/rt/dump") == data
        await storage.put_bytes("t/rt/small", b"tiny")

    asyncio.run(scenario())
    container = azurite.client().get_container_client(azure_container)
    blob = container.get_blob_client(f"{AZURE_PREFIX}/t/rt/dump")
    committed, uncommitted = blob.get_block_list("all")
    assert [block.size for block in committed] == [MiB] * 5 + [123] and uncommitted == []
    assert blob.get_blob_properties().blob_tier == "Cool"
    assert container.get_blob_client(f"{AZURE_PREFIX}/t/rt/small").get_blob_properties().blob_tier == "Cool"


def test_inflight_blocks_are_bounded(
    make_azure: AzureFactory, azurite: Azurite, azure_container: str, stage_log: StageLog
) -> None:
    """At most max_inflight_blocks staged at once, write() waits for a slot: memory stays (n + 1) blocks."""
    stage_log.delay = 0.2
    storage = make_azure(max_inflight_blocks=2)
    finished_when_fifth_started: list[int] = []

    async def scenario() -> None:
        writer = await storage.open_writer("t/bound/dump")
        for number in range(1, 9):
            await writer.write(os.urandom(MiB))  # each write fills one block exactly
            if number == 5:
                finished_when_fifth_started.append(stage_log.finished)
        await writer.commit()

    asyncio.run(scenario())
    assert stage_log.started == 8
    assert stage_log.peak == 2  # blocks did overlap, and never more than max_inflight_blocks
    assert finished_when_fifth_started[0] >= 2  # write() waited for free slots (backpressure)
    assert blobs(azurite, azure_container) == [f"{AZURE_PREFIX}/t/bound/dump"]


def test_nothing_is_visible_before_commit(make_azure: AzureFactory, azurite: Azurite, azure_container: str) -> None:
    storage = make_azure()

    async def scenario() -> None:
        writer = await storage.open_writer("t/vis/dump")
        await writer.write(os.urandom(3 * MiB))
        assert blobs(azurite, azure_container, uncommitted=True) == [f"{AZURE_PREFIX}/t/vis/dump"]  # blocks staged
        assert await storage.list() == []
        with pytest.raises(ObjectNotFound):
            await storage.stat("t/vis/dump")
        await writer.commit()
        assert [info.key for info in await storage.list()] == ["t/vis/dump"]

    asyncio.run(scenario())


def test_abort_leaves_no_blocks_and_no_object(make_azure: AzureFactory, azurite: Azurite, azure_container: str) -> None:
    storage = make_azure()

    async def scenario() -> None:
        writer = await storage.open_writer("t/abort/dump")
        await writer.write(os.urandom(3 * MiB))
        await writer.abort()
        await writer.abort()  # idempotent
        with pytest.raises(StorageError, match="already finished"):
            await writer.write(b"more")
        with pytest.raises(StorageError, match="already finished"):
            await writer.commit()

    asyncio.run(scenario())
    assert blobs(azurite, azure_container, uncommitted=True) == []


def test_abort_of_a_replacement_keeps_the_existing_object(
    make_azure: AzureFactory, azurite: Azurite, azure_container: str
) -> None:
    storage = make_azure()

    async def scenario() -> None:
        await storage.put_bytes("t/keep/dump", b"the old object")
        writer = await storage.open_writer("t/keep/dump")
        await writer.write(os.urandom(2 * MiB))
        await writer.abort()
        assert await storage.get_bytes("t/keep/dump") == b"the old object"
        assert await storage.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1)) == []
        assert await storage.get_bytes("t/keep/dump") == b"the old object"

    asyncio.run(scenario())


@pytest.mark.parametrize("during", ["write", "commit"])
def test_cancellation_aborts_the_upload(
    make_azure: AzureFactory, azurite: Azurite, azure_container: str, stage_log: StageLog, during: str
) -> None:
    storage = make_azure(max_inflight_blocks=1)

    async def backup() -> None:
        writer = await storage.open_writer("t/cancel/dump")
        await writer.write(os.urandom(MiB + 10))  # block 1 staged (the first one before write returns)
        stage_log.delay = 5.0  # block 2 is still on its way when the task is cancelled
        await writer.write(os.urandom(MiB))
        if during == "write":
            await writer.write(os.urandom(MiB))  # block 3 waits for block 2's slot
        else:
            await writer.commit()  # waits for block 2
        raise AssertionError("not cancelled")

    async def scenario() -> None:
        second_block = stage_log.entered = asyncio.Event()
        stage_log.entered_at = 2
        task = asyncio.create_task(backup())
        await asyncio.wait_for(second_block.wait(), 10)
        assert blobs(azurite, azure_container, uncommitted=True) == [f"{AZURE_PREFIX}/t/cancel/dump"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert blobs(azurite, azure_container, uncommitted=True) == []


def test_upload_cut_mid_stream_fails_cleanly(
    make_azure: AzureFactory, azurite: Azurite, azure_container: str, tmp_path: Path
) -> None:
    """Every block upload is cut after 256 KiB (small requests still pass): one clear line, nothing left."""

    async def scenario() -> None:
        async with Proxy(azurite.url) as proxy:
            storage = make_azure(connection_string_file=through(azurite, proxy, tmp_path), retries=1)
            writer = await storage.open_writer("t/cut/dump")
            proxy.cut_uploads_after = 256 * 1024
            with pytest.raises(StorageError) as caught:
                for chunk in uneven_chunks(os.urandom(4 * MiB)):
                    await writer.write(chunk)
                await writer.commit()
            message = str(caught.value)
            assert message.startswith("azure: cannot stage block 1 of ")
            assert f"azure://{azure_container}/{AZURE_PREFIX}/t/cut/dump" in message
            assert "gave up after 2 attempts" in message
            assert "\n" not in message and ACCOUNT_KEY not in message

    asyncio.run(scenario())
    assert blobs(azurite, azure_container, uncommitted=True) == []


def test_a_block_cut_mid_body_is_sent_again_whole(
    make_azure: AzureFactory, azurite: Azurite, azure_container: str, tmp_path: Path
) -> None:
    data = os.urandom(4 * MiB + 5)

    async def scenario() -> None:
        async with Proxy(azurite.url) as proxy:
            storage = make_azure(connection_string_file=through(azurite, proxy, tmp_path), retries=3)
            writer = await storage.open_writer("t/again/dump")
            proxy.cut_uploads_after, proxy.cut_uploads_limit = 512 * 1024, 2
            for chunk in uneven_chunks(data):
                await writer.write(chunk)
            await writer.commit()
            assert proxy.cut_uploads_limit == 0  # every cut happened
            assert await storage.get_bytes("t/again/dump") == data

    asyncio.run(scenario())


# -- killed writers, outages and stale uploads --------------------------------------------------


def test_a_killed_writer_leaves_blocks_that_abort_stale_uploads_removes(
    make_azure: AzureFactory, azurite: Azurite, azure_container: str
) -> None:
    """A writer dropped without commit or abort (the process died): invisible leftovers, prune removes them."""
    storage = make_azure()

    async def scenario() -> None:
        writer: Any = await storage.open_writer("t/killed/dump")
        await writer.write(os.urandom(2 * MiB + 1))
        await asyncio.sleep(0.3)  # block 2 lands
        await writer._close_client()  # the process dies: its connections go, nothing more is sent
        del writer
        gc.collect()
        await storage.put_bytes("t/done/manifest.json", b"{}")  # a committed neighbour
        assert [info.key for info in await storage.list()] == ["t/done/manifest.json"]
        with pytest.raises(ObjectNotFound):
            await storage.stat("t/killed/dump")
        assert await storage.abort_stale_uploads(datetime.now(UTC) - timedelta(hours=1)) == []  # still young
        assert await storage.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1)) == ["t/killed/dump"]
        assert await storage.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1)) == []
        assert [info.key for info in await storage.list()] == ["t/done/manifest.json"]

    asyncio.run(scenario())
    assert blobs(azurite, azure_container, uncommitted=True) == [f"{AZURE_PREFIX}/t/done/manifest.json"]


def test_abort_stale_uploads_only_under_the_prefix(make_azure: AzureFactory, azurite: Azurite, azure_container: str) -> None:
    container = azurite.client().get_container_client(azure_container)
    for name in (f"{AZURE_PREFIX}/t/old/dump", "elsewhere/t/old/dump"):
        container.get_blob_client(name).stage_block("00000000000000000000001", b"x" * 100)
    storage = make_azure()
    cutoff = datetime.now(UTC) + timedelta(minutes=1)
    assert asyncio.run(storage.abort_stale_uploads(cutoff.replace(tzinfo=None))) == ["t/old/dump"]  # naive means UTC
    assert blobs(azurite, azure_container, uncommitted=True) == ["elsewhere/t/old/dump"]


def test_outage_leaves_blocks_that_abort_stale_uploads_removes(
    make_azure: AzureFactory, azurite: Azurite, azure_container: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with Proxy(azurite.url) as proxy:
            storage = make_azure(connection_string_file=through(azurite, proxy, tmp_path), retries=1)
            writer = await storage.open_writer("t/outage/dump")
            await writer.write(os.urandom(MiB + 1))  # block 1 staged
            outage(proxy)
            with pytest.raises(StorageError, match="gave up after 2 attempts"):
                await writer.write(os.urandom(MiB))
                await writer.commit()
            assert blobs(azurite, azure_container, uncommitted=True) == [f"{AZURE_PREFIX}/t/outage/dump"]
            proxy.refuse = False
            assert await storage.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1)) == ["t/outage/dump"]

    asyncio.run(scenario())
    assert blobs(azurite, azure_container, uncommitted=True) == []


# -- reads, retries, errors ---------------------------------------------------------------------


def test_read_resumes_after_a_dropped_connection(make_azure: AzureFactory, azurite: Azurite, tmp_path: Path) -> None:
    """Downloads come in 4 MiB ranges; the second is cut: the read goes on from 4 MiB, pinned to the ETag."""
    data = os.urandom(9 * MiB)

    async def scenario() -> None:
        async with Proxy(azurite.url) as proxy:
            storage = make_azure(connection_string_file=through(azurite, proxy, tmp_path), retries=1)
            await storage.put_bytes("t/r/dump", data)
            proxy.heads.clear()
            proxy.cut_download_once_after = 5 * MiB  # bytes on one connection: inside the second range
            assert await storage.get_bytes("t/r/dump") == data
            # Every request of every connection (a connection's requests follow one another in its head).
            requests = [request for head in proxy.heads for request in head.decode().lower().split("get /")[1:]]
            starts = [int(request.split("x-ms-range: bytes=")[1].split("-")[0]) for request in requests]
            assert starts == [0, 4 * MiB, 4 * MiB, 8 * MiB]  # the cut range again, not the whole object
            assert "if-match:" in requests[2]

    asyncio.run(scenario())


def test_transient_failures_are_retried_permanent_ones_are_not(
    make_azure: AzureFactory, azurite: Azurite, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with Proxy(azurite.url) as proxy:
            storage = make_azure(connection_string_file=through(azurite, proxy, tmp_path), retries=2)
            proxy.refuse_next = 2
            await storage.put_bytes("t/retry/x", b"x")
            assert proxy.attempts == 3
            assert await storage.get_bytes("t/retry/x") == b"x"

            proxy.attempts = 0
            missing = make_azure(
                connection_string_file=through(azurite, proxy, tmp_path), retries=3, container="no-such-container"
            )
            with pytest.raises(StorageError, match="container no-such-container does not exist") as caught:
                await missing.put_bytes("t/x", b"x")
            assert not isinstance(caught.value, ObjectNotFound)
            assert proxy.attempts == 1

    asyncio.run(scenario())


def test_unreachable_endpoint_is_a_one_line_storage_error(
    make_azure: AzureFactory, azurite: Azurite, tmp_path: Path
) -> None:
    path = tmp_path / "cs-unreachable"
    path.write_text(azurite.connection_string(f"http://127.0.0.1:9/{ACCOUNT}"))
    storage = make_azure(connection_string_file=path, retries=0)

    async def scenario() -> None:
        for operation in (storage.stat("t/x"), storage.list("t/"), storage.put_bytes("t/x", b"x")):
            with pytest.raises(StorageError) as caught:
                await operation
            assert not isinstance(caught.value, ObjectNotFound)
            message = str(caught.value)
            assert message.startswith("azure: cannot ") and "127.0.0.1:9" in message
            assert "\n" not in message and ACCOUNT_KEY not in message

    asyncio.run(scenario())


def test_conditional_put_sends_if_none_match(
    make_azure: AzureFactory, azurite: Azurite, azure_container: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with Proxy(azurite.url) as proxy:
            storage = make_azure(connection_string_file=through(azurite, proxy, tmp_path))
            await storage.put_bytes("t/m/manifest.json", b"{}", if_absent=True)
            assert b"if-none-match: *" in proxy.heads[-1].lower()
            with pytest.raises(ObjectExists, match=r"^azure: an object already exists at t/m/manifest.json$"):
                await storage.put_bytes("t/m/manifest.json", b"{2}", if_absent=True)
            await storage.put_bytes("t/m/manifest.json", b"{3}")  # unconditional: replaces
            assert b"if-none-match" not in proxy.heads[-1].lower()
            assert await storage.get_bytes("t/m/manifest.json") == b"{3}"

    asyncio.run(scenario())


def test_list_dirs_is_one_delimiter_listing(make_azure: AzureFactory, azurite: Azurite, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Proxy(azurite.url) as proxy:
            storage = make_azure(connection_string_file=through(azurite, proxy, tmp_path))
            for number in range(5):
                await storage.put_bytes(f"app/b{number}/wal/{number}", b"-")
            proxy.heads.clear()
            assert await storage.list_dirs("app/") == [f"b{number}" for number in range(5)]
            assert len(proxy.heads) == 1 and b"&delimiter=/ " in proxy.heads[0].lower()

    asyncio.run(scenario())


def test_one_storage_across_event_loops_and_describe(make_azure: AzureFactory, azure_container: str) -> None:
    storage = make_azure()
    asyncio.run(storage.put_bytes("t/loops/x", b"first"))
    assert asyncio.run(storage.get_bytes("t/loops/x")) == b"first"
    assert storage.describe().startswith(f"azure (azure container {azure_container}/{AZURE_PREFIX}/ at http://127.0.0.1:")
    assert ACCOUNT_KEY not in storage.describe() and ACCOUNT_KEY not in repr(storage.config)


# -- credentials and secrets --------------------------------------------------------------------


@pytest.fixture
def sas_file(azurite: Azurite, azure_container: str, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    token = generate_container_sas(
        ACCOUNT, azure_container, account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, delete=True, list=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )  # fmt: skip
    path = tmp_path / "sas"
    path.write_text("?" + token + "\n")
    yield path, token


def test_sas_token_file_and_no_secret_in_any_log(
    make_azure: AzureFactory, azurite: Azurite, sas_file: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """With every logger at DEBUG, neither the SAS signature nor the account key reaches a log line or an error."""
    path, token = sas_file
    signature = dict(part.split("=", 1) for part in token.split("&"))["sig"]
    caplog.set_level(logging.DEBUG)
    # Even the SDK's per-request log (which the storage turns down to WARNING) is let through here.
    caplog.set_level(logging.DEBUG, logger="azure.core.pipeline.policies.http_logging_policy")

    async def scenario() -> None:
        storage = make_azure(connection_string_file=None, sas_token_file=path, account_url=azurite.url, retries=1)
        writer = await storage.open_writer("t/sas/dump")
        await writer.write(os.urandom(MiB + 5))
        await writer.commit()
        await storage.put_bytes("t/sas/m", b"{}", if_absent=True)
        with pytest.raises(ObjectExists):
            await storage.put_bytes("t/sas/m", b"{}", if_absent=True)
        assert [info.key for info in await storage.list("t/")] == ["t/sas/dump", "t/sas/m"]
        assert len(await storage.get_bytes("t/sas/dump")) == MiB + 5
        wrong = tmp_path / "wrong-sas"
        wrong.write_text(token.replace(signature, "AAAA" + signature[4:]))
        with pytest.raises(StorageError) as caught:
            await make_azure(connection_string_file=None, sas_token_file=wrong, account_url=azurite.url).stat("t/sas/m")
        assert "\n" not in str(caught.value) and signature[4:] not in str(caught.value)
        keyed = make_azure()  # the connection string (account key), at DEBUG too
        await keyed.put_bytes("t/key/x", b"x")
        with pytest.raises(ObjectNotFound):
            await keyed.stat("t/key/nope")

    asyncio.run(scenario())
    logged = caplog.text + "".join(record.getMessage() for record in caplog.records) + "".join(capsys.readouterr())
    assert any(record.name.startswith("azure.") and "sig=" in record.getMessage() for record in caplog.records)
    for secret in (signature, signature.replace("%2F", "/").replace("%2B", "+").replace("%3D", "="), ACCOUNT_KEY):
        assert secret not in logged


def test_the_default_chain_token_is_cached_until_near_expiry() -> None:
    made: list[str] = []
    now = [1000.0]

    class Fake:
        async def __aenter__(self) -> Fake:
            made.append("opened")
            return self

        async def __aexit__(self, *exc_info: object) -> None:
            made.append("closed")

        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken(f"token-{len(made)}", int(now[0]) + 3600)

    credential = CachedTokenCredential(Fake, clock=lambda: now[0])

    async def scenario() -> None:
        first = await credential.get_token("https://storage.azure.com/.default")
        assert (await credential.get_token("https://storage.azure.com/.default")) is first
        now[0] += 3600 - 299  # inside the last five minutes: a new one
        assert (await credential.get_token("https://storage.azure.com/.default")) is not first

    asyncio.run(scenario())
    assert made == ["opened", "closed", "opened", "closed"]  # each real credential closed right after use


def test_the_default_chain_is_used_without_files(make_azure: AzureFactory, azurite: Azurite) -> None:
    """Without files, the storage asks its token credential (DefaultAzureCredential) and sends a bearer token."""
    asked: list[tuple[str, ...]] = []

    class Recording:
        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            asked.append(scopes)
            return AccessToken("not-a-real-token", int(time.time()) + 3600)

        async def close(self) -> None:
            return None

    storage = make_azure(connection_string_file=None, account_url=azurite.url.replace("http://", "https://"),
                         credential=Recording(), retries=0)  # fmt: skip
    with pytest.raises(StorageError, match=r"^azure: cannot stat "):
        asyncio.run(storage.stat("t/x"))  # Azurite speaks HTTP only here: the request fails after the token
    assert asked == [("https://storage.azure.com/.default",)]


def test_registry_builds_the_class_that_declares_its_capabilities() -> None:
    from dbguardian.storage.registry import BACKENDS

    assert BACKENDS["azure"].capabilities == AzureStorage.capabilities
