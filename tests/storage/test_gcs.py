"""The GCS backend against fake-gcs-server over real HTTP: resumable chunks, memory bound, abort,
cancellation, a killed writer's session found again by prune, retries, outages, credentials.

Network trouble is made by the TCP :class:`~tests.storage.test_s3.Proxy` between the storage and the
emulator. What the emulator cannot show (see gcs_fixtures.py) is said where it matters.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.storage.gcs import storage as gcs_storage
from dbguardian.storage.gcs.config import GcsStorageConfig
from dbguardian.storage.gcs.resumable import GcsWriter
from dbguardian.storage.gcs.storage import MARKERS, GcsStorage, is_transient
from tests.storage.gcs_fixtures import GCS_PREFIX, FakeGcs, GcsFactory
from tests.storage.test_s3 import Proxy

MiB = 1024 * 1024


def markers(fake_gcs: FakeGcs, bucket: str) -> list[str]:
    return fake_gcs.names(bucket, f"{GCS_PREFIX}/{MARKERS}")


def data_objects(fake_gcs: FakeGcs, bucket: str) -> list[str]:
    return [name for name in fake_gcs.names(bucket) if MARKERS not in name]


@pytest.fixture
def cancelled_sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Session URIs the storage cancelled (a spy around the real DELETE: the emulator answers 499 but keeps them)."""
    seen: list[str] = []
    original = GcsStorage.cancel_session

    async def spy(self: GcsStorage, http: Any, session_uri: str) -> None:
        seen.append(session_uri)
        await original(self, http, session_uri)

    monkeypatch.setattr(GcsStorage, "cancel_session", spy)
    return seen


def uneven(total: int) -> list[bytes]:
    sizes = [1, 300_001, 1024 * 1024 + 7, 65_536, 0, 2 * 1024 * 1024 - 3]
    chunks, index, left = [], 0, total
    while left > 0:
        size = min(sizes[index % len(sizes)], left)
        chunks.append(os.urandom(size))
        left -= size
        index += 1
    return chunks


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"chunk_size": "1000KiB"}, "multiple of 256KiB"),
        ({"chunk_size": "128KiB"}, "multiple of 256KiB"),
        ({"anonymous": True, "credentials_file": "/x"}, "not both"),
        ({"prefix": "a//b"}, "plain path"),
        ({"endpoint_url": "localhost:4443"}, "http:// or https://"),
        ({"storage_class": "GLACIER"}, "STANDARD"),
    ],
)
def test_config_refuses(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GcsStorageConfig.model_validate({"type": "gcs", "bucket": "backups", **fields})


def test_config_defaults_and_registry() -> None:
    from dbguardian.storage.registry import BACKENDS

    config = GcsStorageConfig.model_validate(
        {"type": "gcs", "bucket": "backups", "prefix": "/prod/db/", "chunk_size": "16MB"}
    )
    assert (config.prefix, config.chunk_size, config.retries, config.storage_class) == ("prod/db", 16 * MiB, 5, None)
    assert BACKENDS["gcs"].config is GcsStorageConfig
    assert BACKENDS["gcs"].capabilities == GcsStorage.capabilities


@pytest.mark.parametrize(
    ("status", "transient"), [(429, True), (500, True), (503, True), (408, True), (403, False), (404, False), (412, False)]
)
def test_transient_statuses(status: int, transient: bool) -> None:
    import aiohttp

    error = aiohttp.ClientResponseError(None, (), status=status, message="x")  # type: ignore[arg-type]
    assert is_transient(error) is transient
    assert is_transient(aiohttp.ServerDisconnectedError()) and is_transient(ConnectionResetError())
    assert not is_transient(ValueError("x"))


# -- uploads -------------------------------------------------------------------------------------


def test_resumable_round_trip_in_chunks(
    make_gcs: GcsFactory, fake_gcs: FakeGcs, gcs_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of chunk_size (1 MiB here) with an open end, then the rest with the total."""
    sent: list[tuple[int, int, int | None]] = []
    original = GcsWriter._send

    async def spy(self: GcsWriter, data: memoryview, start: int, *, total: int | None) -> dict[str, Any]:
        sent.append((start, len(data), total))
        return await original(self, data, start, total=total)

    monkeypatch.setattr(GcsWriter, "_send", spy)
    chunks = uneven(5 * MiB + 345)
    data = b"".join(chunks)

    async def scenario() -> None:
        async with Proxy(fake_gcs.url) as proxy:
            storage = make_gcs(storage_class="NEARLINE", endpoint_url=proxy.url)
            writer = await storage.open_writer("t/1/dump")
            for chunk in chunks:
                await writer.write(chunk)
            info = await writer.commit()
            assert (info.key, info.size) == ("t/1/dump", len(data))
            starts = [head for head in proxy.heads if b"uploadType=resumable" in head and head.startswith(b"POST ")]
            assert len(starts) == 1 and b'"storageClass": "NEARLINE"' in starts[0]
            assert sent == [(n * MiB, MiB, None) for n in range(5)] + [(5 * MiB, 345, 5 * MiB + 345)]
            read = [chunk async for chunk in storage.read("t/1/dump", chunk_size=MiB)]
            assert b"".join(read) == data
            assert {len(chunk) for chunk in read[:-1]} == {MiB}
            await storage.put_bytes("t/1/manifest.json", b"{}")
            assert [info.key for info in await storage.list("t/")] == ["t/1/dump", "t/1/manifest.json"]

    asyncio.run(scenario())
    # (fake-gcs-server drops the storage class of resumable uploads; it keeps that of multipart ones)
    assert fake_gcs.object(gcs_bucket, f"{GCS_PREFIX}/t/1/manifest.json")["storageClass"] == "NEARLINE"
    assert markers(fake_gcs, gcs_bucket) == []  # committed: its marker is gone


def test_an_object_of_whole_chunks_is_finalized_by_an_empty_last_request(make_gcs: GcsFactory) -> None:
    storage = make_gcs()
    data = os.urandom(3 * MiB)

    async def scenario() -> None:
        writer = await storage.open_writer("t/even/dump")
        await writer.write(data)
        await writer.commit()  # three 1 MiB chunks sent; commit says "bytes */3145728"
        assert await storage.get_bytes("t/even/dump") == data
        assert (await storage.stat("t/even/dump")).size == len(data)

    asyncio.run(scenario())


def test_memory_stays_within_two_chunks(make_gcs: GcsFactory) -> None:
    """A 24 MiB stream through 1 MiB chunks: at most one chunk on the wire, Python's peak stays ~2 chunks."""
    storage = make_gcs(chunk_size=MiB)
    in_flight: list[int] = []

    async def scenario() -> None:
        writer = await storage.open_writer("t/big/dump")
        piece = os.urandom(64 * 1024)
        tracemalloc.start()
        try:
            for _ in range(24 * 16):
                await writer.write(piece)
                in_flight.append(writer.chunks_in_flight)
            await writer.commit()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 3 * MiB, f"peak {peak / MiB:.1f} MiB"
        assert (await storage.stat("t/big/dump")).size == 24 * MiB

    asyncio.run(scenario())
    assert max(in_flight) == 1


def test_conditional_put_sends_if_generation_match_0(make_gcs: GcsFactory, fake_gcs: FakeGcs, gcs_bucket: str) -> None:
    async def scenario() -> None:
        async with Proxy(fake_gcs.url) as proxy:
            storage = make_gcs(endpoint_url=proxy.url)
            await storage.put_bytes("t/m/manifest.json", b"{}", if_absent=True)
            assert b"ifGenerationMatch=0" in proxy.heads[-1]
            with pytest.raises(ObjectExists, match=r"^gcs: an object already exists at t/m/manifest.json$"):
                await storage.put_bytes("t/m/manifest.json", b"{2}", if_absent=True)
            await storage.put_bytes("t/m/manifest.json", b"{3}")  # unconditional: replaces
            assert b"ifGenerationMatch" not in proxy.heads[-1]

    asyncio.run(scenario())
    assert (
        fake_gcs.request(
            "GET", f"/storage/v1/b/{gcs_bucket}/o/{GCS_PREFIX}%2Ft%2Fm%2Fmanifest.json", params={"alt": "media"}
        )[1]
        == b"{3}"
    )


def test_list_dirs_is_one_delimiter_listing_and_hides_markers(make_gcs: GcsFactory, fake_gcs: FakeGcs) -> None:
    async def scenario() -> None:
        async with Proxy(fake_gcs.url) as proxy:
            storage = make_gcs(endpoint_url=proxy.url)
            for number in range(5):
                await storage.put_bytes(f"app/b{number}/wal/{number}", b"-")
            writer = await storage.open_writer("app/b9/dump")
            await writer.write(os.urandom(MiB + 1))  # a session and its marker exist now
            proxy.heads.clear()
            assert await storage.list_dirs("app/") == [f"b{number}" for number in range(5)]
            assert len(proxy.heads) == 1 and b"delimiter=" in proxy.heads[0]
            assert await storage.list_dirs("") == ["app"]
            assert all(MARKERS not in info.key for info in await storage.list())
            with pytest.raises(StorageError, match="reserved for upload markers"):
                await storage.put_bytes(f"{MARKERS}x.json", b"{}")
            await writer.abort()

    asyncio.run(scenario())


# -- interrupted uploads -------------------------------------------------------------------------


def test_abort_cancels_the_session_and_removes_the_marker(
    make_gcs: GcsFactory, fake_gcs: FakeGcs, gcs_bucket: str, cancelled_sessions: list[str]
) -> None:
    storage = make_gcs()

    async def scenario() -> None:
        writer = await storage.open_writer("t/abort/dump")
        await writer.write(os.urandom(2 * MiB + 5))
        [marker] = markers(fake_gcs, gcs_bucket)
        session = json.loads(fake_gcs.request("GET", f"/storage/v1/b/{gcs_bucket}/o/{marker.replace('/', '%2F')}",
                                              params={"alt": "media"})[1])["session"]  # fmt: skip
        await writer.abort()
        await writer.abort()  # idempotent
        assert cancelled_sessions == [session]
        with pytest.raises(StorageError, match="already finished"):
            await writer.write(b"more")
        with pytest.raises(StorageError, match="already finished"):
            await writer.commit()
        with pytest.raises(ObjectNotFound):
            await storage.stat("t/abort/dump")

    asyncio.run(scenario())
    assert markers(fake_gcs, gcs_bucket) == []
    assert data_objects(fake_gcs, gcs_bucket) == []


@pytest.mark.parametrize("during", ["write", "commit"])
def test_cancellation_cancels_the_session(
    make_gcs: GcsFactory, fake_gcs: FakeGcs, gcs_bucket: str, cancelled_sessions: list[str], during: str
) -> None:
    storage = make_gcs()
    started = asyncio.Event()

    async def backup() -> None:
        writer = await storage.open_writer("t/cancel/dump")
        await writer.write(os.urandom(MiB + 1))  # chunk 1 goes out in the background
        started.set()
        if during == "write":
            while True:
                await writer.write(os.urandom(MiB))
        await writer.commit()
        await asyncio.sleep(30)

    async def scenario() -> None:
        task = asyncio.create_task(backup())
        await started.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    if during == "write":
        assert len(cancelled_sessions) == 1
        assert data_objects(fake_gcs, gcs_bucket) == []
    assert markers(fake_gcs, gcs_bucket) == []


KILLED_WRITER = """
import asyncio, os, sys, time
from dbguardian.storage.gcs.config import GcsStorageConfig
from dbguardian.storage.gcs.resumable import GcsWriter
from dbguardian.storage.gcs.storage import GcsStorage

async def main():
    storage = GcsStorage("gcs", GcsStorageConfig.model_validate_json(sys.argv[1]))
    writer = await storage.open_writer("t/killed/dump")
    await writer.write(os.urandom(3 * 1024 * 1024 + 17))
    print("written", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_a_killed_writer_leaves_a_marker_that_prune_cleans(
    make_gcs: GcsFactory, fake_gcs: FakeGcs, gcs_bucket: str, cancelled_sessions: list[str]
) -> None:
    """kill -9 mid-upload: no object, a session only its marker names; abort_stale_uploads cancels it, removes the marker."""
    storage = make_gcs()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_WRITER), storage.config.model_dump_json()],
                             stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"written"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    [marker] = markers(fake_gcs, gcs_bucket)
    record = json.loads(fake_gcs.request("GET", f"/storage/v1/b/{gcs_bucket}/o/{marker.replace('/', '%2F')}",
                                         params={"alt": "media"})[1])  # fmt: skip
    assert record["key"] == "t/killed/dump" and "upload_id=" in record["session"]

    async def scenario() -> None:
        assert await storage.list() == []  # neither the upload nor its marker is a backup object
        assert await storage.abort_stale_uploads(datetime.now(UTC) - timedelta(minutes=5)) == []  # young: kept
        assert markers(fake_gcs, gcs_bucket) == [marker]
        assert await storage.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1)) == ["t/killed/dump"]
        assert await storage.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1)) == []  # once

    asyncio.run(scenario())
    assert cancelled_sessions == [record["session"]]
    assert markers(fake_gcs, gcs_bucket) == []
    assert data_objects(fake_gcs, gcs_bucket) == []


def test_outage_leaves_a_marker_that_abort_stale_uploads_cleans(
    make_gcs: GcsFactory, fake_gcs: FakeGcs, gcs_bucket: str, cancelled_sessions: list[str]
) -> None:
    """The service becomes unreachable mid-upload: the writer fails and cannot cancel; prune does later."""

    async def scenario() -> None:
        async with Proxy(fake_gcs.url) as proxy:
            storage = make_gcs(endpoint_url=proxy.url, retries=1)
            writer = await storage.open_writer("t/outage/dump")
            await writer.write(os.urandom(MiB + 1))
            proxy.refuse, proxy.cut_uploads_after = True, 0  # new connections refused, open ones cut
            with pytest.raises(StorageError, match="gave up after 2 attempts"):
                for _ in range(4):
                    await writer.write(os.urandom(MiB))
                await writer.commit()
            assert len(markers(fake_gcs, gcs_bucket)) == 1  # the abort could not get through
            proxy.refuse, proxy.cut_uploads_after = False, None
            assert await storage.abort_stale_uploads(datetime.now(UTC) + timedelta(minutes=1)) == ["t/outage/dump"]

    asyncio.run(scenario())
    assert len(cancelled_sessions) == 3  # the writer's two attempts (refused), then prune's
    assert len(set(cancelled_sessions)) == 1
    assert markers(fake_gcs, gcs_bucket) == []
    assert data_objects(fake_gcs, gcs_bucket) == []


def test_a_chunk_cut_mid_body_never_leaves_a_truncated_object(
    make_gcs: GcsFactory, fake_gcs: FakeGcs, gcs_bucket: str
) -> None:
    """Every chunk is cut after 256 KiB. With a retry, the status query follows; fake-gcs-server takes
    it as the end of the upload and finalizes a short object: the writer sees the wrong size, deletes
    that generation and fails. Against GCS the query answers 308 with the persisted range instead."""

    async def scenario() -> None:
        async with Proxy(fake_gcs.url) as proxy:
            storage = make_gcs(endpoint_url=proxy.url, retries=1)
            writer = await storage.open_writer("t/cut/dump")
            proxy.cut_uploads_after = 256 * 1024
            with pytest.raises(StorageError) as caught:
                for chunk in uneven(4 * MiB):
                    await writer.write(chunk)
                await writer.commit()
            message = str(caught.value)
            assert message.startswith("gcs: ") and "\n" not in message
            assert "finalized the upload of t/cut/dump early" in message and "truncated object was deleted" in message

    asyncio.run(scenario())
    assert data_objects(fake_gcs, gcs_bucket) == []
    assert markers(fake_gcs, gcs_bucket) == []


# -- reads, retries, errors ----------------------------------------------------------------------


def test_read_resumes_on_the_same_generation(make_gcs: GcsFactory, fake_gcs: FakeGcs) -> None:
    data = os.urandom(3 * MiB)

    async def scenario() -> None:
        async with Proxy(fake_gcs.url) as proxy:
            storage = make_gcs(endpoint_url=proxy.url, retries=1)
            await storage.put_bytes("t/r/dump", data)
            proxy.heads.clear()
            proxy.cut_download_once_after = MiB
            assert await storage.get_bytes("t/r/dump") == data
            gets = [head for head in proxy.heads if head.startswith(b"GET ")]
            assert len(gets) == 2
            resumed = gets[1].decode().lower()
            assert "generation=" in resumed.split("\r\n")[0]
            start = int(resumed.split("range: bytes=")[1].split("-")[0])
            assert MiB // 2 < start <= MiB

    asyncio.run(scenario())


def test_transient_failures_are_retried_permanent_ones_are_not(make_gcs: GcsFactory, fake_gcs: FakeGcs) -> None:
    async def scenario() -> None:
        async with Proxy(fake_gcs.url) as proxy:
            storage = make_gcs(endpoint_url=proxy.url, retries=2)
            proxy.refuse_next = 2
            await storage.put_bytes("t/retry/x", b"x")
            assert proxy.attempts == 3
            assert await storage.get_bytes("t/retry/x") == b"x"

            proxy.attempts = 0
            missing = make_gcs(endpoint_url=proxy.url, retries=3, bucket="no-such-bucket-here")
            with pytest.raises(StorageError, match="no-such-bucket-here") as caught:
                await missing.put_bytes("t/x", b"x")
            assert not isinstance(caught.value, ObjectNotFound)
            assert proxy.attempts == 1

    asyncio.run(scenario())


def test_unreachable_endpoint_is_a_one_line_storage_error(make_gcs: GcsFactory) -> None:
    storage = make_gcs(endpoint_url="http://127.0.0.1:9", retries=0)

    async def scenario() -> None:
        for operation in (storage.stat("t/x"), storage.list("t/"), storage.put_bytes("t/x", b"x")):
            with pytest.raises(StorageError) as caught:
                await operation
            assert not isinstance(caught.value, ObjectNotFound)
            message = str(caught.value)
            assert message.startswith("gcs: cannot ") and "Cannot connect to host 127.0.0.1:9" in message
            assert "\n" not in message

    asyncio.run(scenario())


def test_one_storage_across_event_loops(make_gcs: GcsFactory) -> None:
    storage = make_gcs()
    asyncio.run(storage.put_bytes("t/loops/x", b"first"))
    assert asyncio.run(storage.get_bytes("t/loops/x")) == b"first"
    assert [info.key for info in asyncio.run(storage.list())] == ["t/loops/x"]


def test_describe_names_bucket_and_endpoint(make_gcs: GcsFactory, gcs_bucket: str, fake_gcs: FakeGcs) -> None:
    assert make_gcs().describe() == f"gcs (gs://{gcs_bucket}/{GCS_PREFIX}/ at {fake_gcs.url})"


# -- credentials ---------------------------------------------------------------------------------


def service_account(tmp_path: Path, token_uri: str) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "k1",
                                "private_key": pem.decode(), "client_email": "backup@p.iam.gserviceaccount.com",
                                "client_id": "1", "token_uri": token_uri}))  # fmt: skip
    return path


def test_a_service_account_file_gives_the_bearer_token(make_gcs: GcsFactory, fake_gcs: FakeGcs, tmp_path: Path) -> None:
    """The key file signs a JWT, a (local) token endpoint answers, every request carries the token; it is cached."""
    from aiohttp import web

    grants: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        grants.append(dict(await request.post()))  # type: ignore[arg-type]
        return web.json_response({"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/token", token)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with Proxy(fake_gcs.url) as proxy:
                storage = make_gcs(endpoint_url=proxy.url, anonymous=False,
                                   credentials_file=service_account(tmp_path, f"http://127.0.0.1:{port}/token"))  # fmt: skip
                await storage.put_bytes("t/c/x", b"x")
                assert await storage.get_bytes("t/c/x") == b"x"
                assert [info.key for info in await storage.list("t/")] == ["t/c/x"]
                assert all(b"authorization: bearer ya29.test-token" in head.lower() for head in proxy.heads)
        finally:
            await runner.cleanup()
        assert len(grants) == 1  # cached across requests
        assert grants[0]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer" and grants[0]["assertion"]

    asyncio.run(scenario())


def test_bad_credentials_files_are_one_line_errors(make_gcs: GcsFactory, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("not json -----BEGIN PRIVATE KEY----- secret")

    async def scenario() -> None:
        with pytest.raises(StorageError, match=r"^gcs: cannot read credentials_file .*/nope.json: No such file"):
            await make_gcs(anonymous=False, credentials_file=tmp_path / "nope.json").stat("t/x")
        with pytest.raises(StorageError, match=r"^gcs: credentials_file .*/bad.json is not JSON$"):
            await make_gcs(anonymous=False, credentials_file=tmp_path / "bad.json").stat("t/x")

    asyncio.run(scenario())


def test_no_session_id_in_messages() -> None:
    storage_module: Any = gcs_storage
    text = "cannot PUT http://h/upload/storage/v1/b/b/o?uploadType=resumable&name=x&upload_id=SECRET123 : reset"
    assert "SECRET123" not in storage_module.GcsStorage.redact(None, text)
