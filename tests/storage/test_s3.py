"""The S3 backend against moto over real HTTP: multipart, backpressure, abort, cancellation, outages.

Network trouble is made by :class:`Proxy`, a TCP proxy between the storage and moto that a test can
break on purpose while moto (and its state) stays up. Server-side concurrency is observed by
wrapping moto's ``upload_part`` (the server runs in this process, one thread per request).
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiobotocore.httpchecksum import AioAwsChunkedWrapper
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.httpchecksum import Crc32Checksum
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dbguardian.errors import ObjectExists, ObjectNotFound, StorageError
from dbguardian.storage.s3 import multipart as s3_multipart
from dbguardian.storage.s3.models import ENDPOINT_SERVICES, lean_session
from dbguardian.storage.s3.multipart import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    GiB,
    MiB,
    PartBody,
    part_size_for,
    send_part,
)
from dbguardian.storage.s3.storage import is_transient
from tests.storage.conftest import ACCESS_KEY_ID, PREFIX, SECRET_ACCESS_KEY, MotoServer, S3Factory

# -- helpers -----------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy in front of moto that can refuse connections or cut them mid-transfer."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream_port = urlsplit(upstream_url).port
        self.refuse = False  # accept and drop every connection (an outage)
        self.refuse_next = 0  # drop only the next N connections (a blip)
        self.cut_uploads_after: int | None = None  # reset connections sending more than this many bytes
        self.cut_uploads_limit: int | None = None  # with cut_uploads_after: cut only this many (None: all)
        self.cut_download_once_after: int | None = None  # reset one response after this many bytes
        self.heads: list[bytearray] = []  # the start of every forwarded connection's request
        self.attempts = 0  # connections accepted, refused ones included
        self.url = ""
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._open:
            writer.transport.abort()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        if self.refuse or self.refuse_next:
            self.refuse_next = max(0, self.refuse_next - 1)
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._open |= {writer, up_writer}
        head = bytearray()
        self.heads.append(head)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: bool) -> bool:
            """Copy until end of stream (True) or until told to cut the connection (False)."""
            moved = 0
            while data := await source.read(65536):
                moved += len(data)
                if upstream:
                    head.extend(data[: max(0, 4096 - len(head))])
                    if self.cut_uploads_after is not None and moved > self.cut_uploads_after and self.cut_uploads_limit != 0:
                        if self.cut_uploads_limit is not None:
                            self.cut_uploads_limit -= 1
                        return False
                elif self.cut_download_once_after is not None and moved > self.cut_download_once_after:
                    self.cut_download_once_after = None
                    return False
                sink.write(data)
                await sink.drain()
            return True

        tasks = [asyncio.create_task(pump(reader, up_writer, True)), asyncio.create_task(pump(up_reader, writer, False))]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            clean = all(not task.exception() and task.result() for task in done)
        finally:
            for task in tasks:
                task.cancel()
            self._open -= {writer, up_writer}
        for side in (writer, up_writer):
            if clean:
                side.close()
            else:
                side.transport.abort()


@dataclass
class PartLog:
    """What moto's UploadPart handler saw: concurrency, sizes; optionally slowed down."""

    delay: float = 0.0
    active: int = 0
    peak: int = 0
    finished: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    entered: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def part_log(monkeypatch: pytest.MonkeyPatch) -> PartLog:
    from moto.s3.models import S3Backend

    seen = PartLog()
    original = S3Backend.upload_part

    def upload_part(self: Any, bucket_name: str, multipart_id: str, part_id: int, value: bytes) -> Any:
        with seen.lock:
            seen.active += 1
            seen.peak = max(seen.peak, seen.active)
            seen.sizes[part_id] = len(value)
        seen.entered.set()
        try:
            time.sleep(seen.delay)
            return original(self, bucket_name, multipart_id, part_id, value)
        finally:
            with seen.lock:
                seen.active -= 1
                seen.finished += 1

    monkeypatch.setattr(S3Backend, "upload_part", upload_part)
    return seen


def uneven_chunks(data: bytes) -> Iterator[bytes]:
    sizes = [1, 777_777, 3 * MiB + 5, 65_536, 0, 2 * MiB - 3]
    start, index = 0, 0
    while start < len(data):
        size = sizes[index % len(sizes)]
        yield data[start : start + size]
        start += size
        index += 1


def uploads(moto: MotoServer, bucket: str) -> list[str]:
    return [upload["Key"] for upload in moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def objects(moto: MotoServer, bucket: str) -> list[str]:
    return [item["Key"] for item in moto.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


# -- the part-size scheme ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part_number", "base", "size"),
    [
        (1, 5 * MiB, 5 * MiB),
        (900, 5 * MiB, 5 * MiB),
        (901, 5 * MiB, 10 * MiB),
        (1800, 8 * MiB, 16 * MiB),
        (1801, 8 * MiB, 32 * MiB),
        (9001, 5 * MiB, 5 * GiB),
        (10_000, 5 * MiB, 5 * GiB),
        (10_000, 5 * GiB, 5 * GiB),
    ],
)
def test_part_size_table(part_number: int, base: int, size: int) -> None:
    assert part_size_for(part_number, base) == size


@pytest.mark.parametrize(("part_number", "base"), [(0, 8 * MiB), (10_001, 8 * MiB), (1, 5 * MiB - 1), (1, 5 * GiB + 1)])
def test_part_size_rejects_out_of_range(part_number: int, base: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        part_size_for(part_number, base)


@settings(max_examples=40, deadline=None)
@given(st.integers(MIN_PART_SIZE, MAX_PART_SIZE))
@example(MIN_PART_SIZE)
@example(MIN_PART_SIZE + 1)
@example(8 * MiB)
@example(MAX_PART_SIZE)
def test_part_sizes_fit_5_tib_in_10000_parts(base: int) -> None:
    sizes = [part_size_for(number, base) for number in range(1, MAX_PARTS + 1)]
    assert all(MIN_PART_SIZE <= size <= MAX_PART_SIZE for size in sizes)
    assert sizes == sorted(sizes)
    assert sizes[0] == base
    assert sum(sizes) >= MAX_OBJECT_SIZE


# -- classification of failures ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("SlowDown", 503), True),
        (client_error("InternalError", 500), True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("RequestTimeout", 400), True),
        (client_error("ThrottlingException", 400), True),
        (client_error("TooManyRequests", 429), True),
        (client_error("AccessDenied", 403), False),
        (client_error("NoSuchBucket", 404), False),
        (client_error("NoSuchKey", 404), False),
        (client_error("InvalidArgument", 400), False),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ConnectionClosedError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (ConnectionResetError(), True),
        (NoCredentialsError(), False),
        (ParamValidationError(report="bad"), False),
        (ValueError("x"), False),
    ],
)
def test_transient_errors_are_told_apart(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


# -- against moto --------------------------------------------------------------------------------


@pytest.mark.parametrize("checksums", [False, True], ids=["plain", "crc32"])
def test_multipart_round_trip(make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str, checksums: bool) -> None:
    storage = make_s3(sse="AES256", storage_class="STANDARD_IA", checksums=checksums)
    data = os.urandom(12 * MiB + 345)

    async def scenario() -> None:
        writer = await storage.open_writer("t/1/dump")
        for chunk in uneven_chunks(data):
            await writer.write(chunk)
        info = await writer.commit()
        assert (info.key, info.size) == ("t/1/dump", len(data))
        chunks = [chunk async for chunk in storage.read("t/1/dump", chunk_size=MiB)]
        assert b"".join(chunks) == data
        assert {len(chunk) for chunk in chunks[:-1]} == {MiB}
        small = await storage.open_writer("t/1/manifest.json")
        await small.write(b"{}")
        await small.commit()
        assert [info.key for info in await storage.list("t/")] == ["t/1/dump", "t/1/manifest.json"]

    asyncio.run(scenario())
    client = moto_server.client()
    head = client.head_object(Bucket=s3_bucket, Key=f"{PREFIX}/t/1/dump")
    assert head["ETag"].endswith('-3"')  # three parts: 5 MiB, 5 MiB, 2 MiB + 345
    assert head["ContentLength"] == len(data)
    assert (head["ServerSideEncryption"], head["StorageClass"]) == ("AES256", "STANDARD_IA")
    small = client.head_object(Bucket=s3_bucket, Key=f"{PREFIX}/t/1/manifest.json")
    assert "-" not in small["ETag"]  # a single PutObject
    assert (small["ServerSideEncryption"], small["StorageClass"]) == ("AES256", "STANDARD_IA")
    assert uploads(moto_server, s3_bucket) == []


def test_part_size_grows_as_scheduled(make_s3: S3Factory, part_log: PartLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_multipart, "PARTS_PER_DOUBLING", 1)  # double every part instead of every 900
    storage = make_s3()
    data = os.urandom(15 * MiB + 100)

    async def scenario() -> None:
        writer = await storage.open_writer("t/grow/dump")
        for chunk in uneven_chunks(data):
            await writer.write(chunk)
        await writer.commit()
        assert await storage.get_bytes("t/grow/dump") == data

    asyncio.run(scenario())
    assert part_log.sizes == {1: 5 * MiB, 2: 10 * MiB, 3: 100}


def test_inflight_parts_are_bounded(make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str, part_log: PartLog) -> None:
    part_log.delay = 0.3  # each UploadPart takes a while on the server, so parts pile up if they can
    storage = make_s3(max_inflight_parts=2)
    finished_when_third_part_started: list[int] = []

    async def scenario() -> None:
        writer = await storage.open_writer("t/bound/dump")
        for number in range(1, 4):
            await writer.write(os.urandom(5 * MiB))  # each write fills one part exactly
            if number == 3:
                finished_when_third_part_started.append(part_log.finished)
        await writer.write(b"tail")
        await writer.abort()

    asyncio.run(scenario())
    assert part_log.peak == 2  # parts did overlap, and never more than max_inflight_parts
    assert finished_when_third_part_started[0] >= 1  # write() waited for a free slot (backpressure)
    assert uploads(moto_server, s3_bucket) == []


def test_abort_leaves_no_upload_and_no_object(make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str) -> None:
    storage = make_s3()

    async def scenario() -> None:
        writer = await storage.open_writer("t/abort/dump")
        await writer.write(os.urandom(7 * MiB))
        assert uploads(moto_server, s3_bucket) == [f"{PREFIX}/t/abort/dump"]
        await writer.abort()
        await writer.abort()  # idempotent
        with pytest.raises(StorageError, match="already finished"):
            await writer.write(b"more")
        with pytest.raises(StorageError, match="already finished"):
            await writer.commit()
        with pytest.raises(ObjectNotFound):
            await storage.stat("t/abort/dump")
        assert await storage.list() == []

    asyncio.run(scenario())
    assert uploads(moto_server, s3_bucket) == []
    assert objects(moto_server, s3_bucket) == []


@pytest.mark.parametrize("during", ["write", "commit"])
def test_cancellation_aborts_the_upload(
    make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str, part_log: PartLog, during: str
) -> None:
    part_log.delay = 0.5  # part 1 is still on the server when the task is cancelled
    storage = make_s3(max_inflight_parts=1)

    async def backup() -> None:
        writer = await storage.open_writer("t/cancel/dump")
        await writer.write(os.urandom(6 * MiB))  # part 1 starts in the background
        if during == "write":
            await writer.write(os.urandom(5 * MiB))  # part 2 waits for part 1's slot
        else:
            await writer.commit()  # waits for part 1
        raise AssertionError("not cancelled")

    async def scenario() -> None:
        task = asyncio.create_task(backup())
        assert await asyncio.to_thread(part_log.entered.wait, 10)
        assert uploads(moto_server, s3_bucket) == [f"{PREFIX}/t/cancel/dump"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert uploads(moto_server, s3_bucket) == []
    assert objects(moto_server, s3_bucket) == []


def test_cancellation_while_the_upload_is_being_created_still_aborts_it(
    make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.s3.models import S3Backend

    original = S3Backend.create_multipart_upload
    entered, release = threading.Event(), threading.Event()

    def slow_create(self: Any, *args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(10)  # CreateMultipartUpload reached the server; the client is cancelled meanwhile
        return original(self, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "create_multipart_upload", slow_create)
    storage = make_s3()

    async def scenario() -> None:
        writer = await storage.open_writer("t/create/dump")
        task = asyncio.create_task(writer.write(os.urandom(5 * MiB)))
        assert await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        await asyncio.sleep(0.1)
        release.set()  # the upload gets created after the cancellation...
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(scenario())
    assert uploads(moto_server, s3_bucket) == []  # ...and is aborted all the same
    assert objects(moto_server, s3_bucket) == []


def test_upload_cut_mid_stream_fails_cleanly(make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str) -> None:
    """Every part upload is cut after 1 MiB (small control requests still pass): a clean failure."""

    async def scenario() -> None:
        async with Proxy(moto_server.url) as proxy:
            storage = make_s3(endpoint_url=proxy.url, retries=1)
            writer = await storage.open_writer("t/cut/dump")
            proxy.cut_uploads_after = MiB
            with pytest.raises(StorageError) as caught:
                for chunk in uneven_chunks(os.urandom(12 * MiB)):
                    await writer.write(chunk)
                await writer.commit()
            message = str(caught.value)
            assert message.startswith("s3: cannot upload part ")
            assert f"s3://{s3_bucket}/{PREFIX}/t/cut/dump" in message
            assert "gave up after 2 attempts" in message
            assert "\n" not in message and SECRET_ACCESS_KEY not in message
            with pytest.raises(StorageError):
                await writer.write(b"more")

    asyncio.run(scenario())
    assert uploads(moto_server, s3_bucket) == []  # the abort got through
    assert objects(moto_server, s3_bucket) == []


def test_a_part_cut_mid_body_is_sent_again_whole(make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str) -> None:
    """A part's body is a stream that the first attempt half consumed: the retry must start over."""
    data = os.urandom(12 * MiB)

    async def scenario() -> None:
        async with Proxy(moto_server.url) as proxy:
            storage = make_s3(endpoint_url=proxy.url, retries=2)
            writer = await storage.open_writer("t/retry-part/dump")
            # Two cuts: aiohttp itself resends once on a reused connection, the second reaches our retry.
            proxy.cut_uploads_after, proxy.cut_uploads_limit = 2 * MiB, 4
            for chunk in uneven_chunks(data):
                await writer.write(chunk)
            await writer.commit()
            assert proxy.cut_uploads_limit == 0  # every cut happened
            assert await storage.get_bytes("t/retry-part/dump") == data

    asyncio.run(scenario())
    assert uploads(moto_server, s3_bucket) == []


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 5 * MiB + 123])
def test_part_body_reads_and_seeks_like_a_file(size: int) -> None:
    data = os.urandom(size)
    body, reference = PartBody(bytearray(data)), io.BytesIO(data)
    assert len(body) == size
    for step in (7, 65536, -1):
        assert bytes(body.read(step)) == reference.read(step)
        assert body.tell() == reference.tell()
    assert bytes(body.read()) == reference.read() == b""
    assert body.seek(-3 if size >= 3 else 0, os.SEEK_END) == reference.seek(-3 if size >= 3 else 0, os.SEEK_END)
    assert body.seek(0) == 0
    buffer = bytearray(size + 10)
    assert body.readinto(buffer) == size and bytes(buffer[:size]) == data


def test_a_sent_part_is_let_go_even_when_its_request_sits_in_a_reference_cycle() -> None:
    """botocore's and aiohttp's request objects form reference cycles around the body: a part whose
    upload had returned stayed alive until the cyclic GC ran (a fourth 5 MiB part with 2 in flight)."""
    data = bytearray(os.urandom(1000))
    kept: list[dict[str, object]] = []

    async def send(body: PartBody) -> str:
        request: dict[str, object] = {"body": body, "first": body.read(100)}
        request["self"] = request
        kept.append(request)  # still referenced when send_part returns, as a cycle would be
        return "sent"

    gc.disable()
    try:
        assert asyncio.run(send_part(send, data)) == "sent"
        del kept[0]["first"]  # a piece read of it is the reader's to drop
        data.clear()  # BufferError if a view of the part were still held
    finally:
        gc.enable()


def test_lean_session_loads_plain_models_without_documentation_and_still_resolves_aws_endpoints() -> None:
    session = lean_session()
    loader = session.get_component("data_loader")
    model = loader.load_service_model("s3", "service-2")
    assert type(model) is dict and type(model["shapes"]) is dict  # not OrderedDict
    assert model["operations"]["UploadPart"]["documentation"] == ""
    services = {name for partition in loader.load_data("endpoints")["partitions"] for name in partition["services"]}
    assert "s3" in services and services <= ENDPOINT_SERVICES

    async def endpoints() -> list[str]:
        found = []
        for service, region in (("s3", "eu-west-3"), ("s3", "cn-north-1"), ("sts", "us-west-2")):
            async with session.create_client(
                service, region_name=region, aws_access_key_id="a", aws_secret_access_key="b"
            ) as client:
                found.append(client.meta.endpoint_url)
        return found

    assert asyncio.run(endpoints()) == [
        "https://s3.eu-west-3.amazonaws.com",
        "https://s3.cn-north-1.amazonaws.com.cn",
        "https://sts.us-west-2.amazonaws.com",
    ]


def test_part_body_under_aws_chunked_trailer_encoding_matches_bytes() -> None:
    """Against AWS over HTTPS botocore sends parts aws-chunked with a CRC32 trailer (moto over HTTP
    takes the header path): that encoding must be the same whether it reads a part or plain bytes."""
    data = os.urandom(5 * MiB + 123)

    async def encoded(raw: Any) -> bytes:
        wrapper = AioAwsChunkedWrapper(raw, checksum_cls=Crc32Checksum, checksum_name="x-amz-checksum-crc32")
        return b"".join([piece async for piece in wrapper])

    from_part = asyncio.run(encoded(PartBody(bytearray(data))))
    assert from_part == asyncio.run(encoded(io.BytesIO(data)))
    assert from_part.endswith(b"\r\n\r\n") and b"x-amz-checksum-crc32:" in from_part


def test_outage_leaves_an_upload_that_abort_stale_uploads_removes(
    make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str
) -> None:
    """The store becomes unreachable mid-upload: the writer fails, cannot abort; prune cleans up later."""

    async def scenario() -> None:
        async with Proxy(moto_server.url) as proxy:
            storage = make_s3(endpoint_url=proxy.url, retries=1)
            writer = await storage.open_writer("t/outage/dump")
            await writer.write(os.urandom(6 * MiB))
            client = moto_server.client()
            upload_id = client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"][0]["UploadId"]
            for _ in range(100):  # until part 1 has landed
                parts = client.list_parts(Bucket=s3_bucket, Key=f"{PREFIX}/t/outage/dump", UploadId=upload_id)
                if parts.get("Parts"):
                    break
                await asyncio.sleep(0.05)
            proxy.refuse = True
            with pytest.raises(StorageError, match="gave up after 2 attempts"):
                await writer.write(os.urandom(5 * MiB))
                await writer.commit()
            assert uploads(moto_server, s3_bucket) == [f"{PREFIX}/t/outage/dump"]  # abort could not get through
            proxy.refuse = False
            assert await storage.abort_stale_uploads(datetime.now(UTC)) == ["t/outage/dump"]

    asyncio.run(scenario())
    assert uploads(moto_server, s3_bucket) == []
    assert objects(moto_server, s3_bucket) == []


def test_abort_stale_uploads_only_under_the_prefix_and_before_the_cutoff(
    make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str
) -> None:
    client = moto_server.client()
    client.create_multipart_upload(Bucket=s3_bucket, Key=f"{PREFIX}/t/old/dump")
    client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/t/old/dump")
    storage = make_s3()

    async def scenario() -> None:
        # Moto reports every upload as initiated on 2010-11-10.
        assert await storage.abort_stale_uploads(datetime(2010, 1, 1, tzinfo=UTC)) == []
        assert await storage.abort_stale_uploads(datetime.now()) == ["t/old/dump"]  # naive means UTC
        assert await storage.abort_stale_uploads(datetime.now(UTC)) == []

    asyncio.run(scenario())
    assert uploads(moto_server, s3_bucket) == ["elsewhere/t/old/dump"]


def test_read_resumes_after_a_dropped_connection(make_s3: S3Factory, moto_server: MotoServer) -> None:
    data = os.urandom(3 * MiB)

    async def scenario() -> None:
        async with Proxy(moto_server.url) as proxy:
            storage = make_s3(endpoint_url=proxy.url, retries=1)
            await storage.put_bytes("t/r/dump", data)
            proxy.heads.clear()
            proxy.cut_download_once_after = MiB
            assert await storage.get_bytes("t/r/dump") == data
            gets = [head for head in proxy.heads if head.startswith(b"GET ")]
            assert len(gets) == 2
            resumed = gets[1].decode().lower()
            assert "if-match:" in resumed
            start = int(resumed.split("range: bytes=")[1].split("-")[0])
            assert MiB // 2 < start <= MiB  # went on from what had arrived, not from the start

    asyncio.run(scenario())


def test_transient_failures_are_retried_permanent_ones_are_not(make_s3: S3Factory, moto_server: MotoServer) -> None:
    async def scenario() -> None:
        async with Proxy(moto_server.url) as proxy:
            storage = make_s3(endpoint_url=proxy.url, retries=2)
            proxy.refuse_next = 2
            await storage.put_bytes("t/retry/x", b"x")
            assert proxy.attempts == 3
            assert await storage.get_bytes("t/retry/x") == b"x"

            proxy.attempts = 0
            missing = make_s3(endpoint_url=proxy.url, retries=3, bucket="no-such-bucket-here")
            with pytest.raises(StorageError, match="bucket no-such-bucket-here does not exist") as caught:
                await missing.put_bytes("t/x", b"x")
            assert not isinstance(caught.value, ObjectNotFound)
            assert proxy.attempts == 1

    asyncio.run(scenario())


def test_credentials_come_from_the_key_files(make_s3: S3Factory, moto_server: MotoServer, tmp_path: Any) -> None:
    async def scenario() -> None:
        async with Proxy(moto_server.url) as proxy:
            await make_s3(endpoint_url=proxy.url).put_bytes("t/c/x", b"x")
            assert f"Credential={ACCESS_KEY_ID}/".encode() in proxy.heads[-1]
            assert b"AKIDFROMTHEENVIRONMENT" not in proxy.heads[-1]  # conftest puts other keys in the environment

            # Without key files: the standard AWS chain (here: the environment).
            await make_s3(endpoint_url=proxy.url, access_key_id_file=None, secret_access_key_file=None).stat("t/c/x")
            assert b"Credential=AKIDFROMTHEENVIRONMENT/" in proxy.heads[-1]

        missing = make_s3(access_key_id_file=tmp_path / "nope", secret_access_key_file=tmp_path / "nope2")
        with pytest.raises(StorageError, match=r"^s3: cannot read access_key_id_file .*/nope: No such file"):
            await missing.stat("t/c/x")

    asyncio.run(scenario())


def test_unreachable_endpoint_is_a_one_line_storage_error(make_s3: S3Factory) -> None:
    storage = make_s3(endpoint_url="http://127.0.0.1:9", retries=0)

    async def scenario() -> None:
        for operation in (storage.stat("t/x"), storage.list("t/"), storage.put_bytes("t/x", b"x")):
            with pytest.raises(StorageError) as caught:
                await operation
            assert not isinstance(caught.value, ObjectNotFound)
            message = str(caught.value)
            assert message.startswith("s3: cannot ") and "Could not connect" in message
            assert "\n" not in message and SECRET_ACCESS_KEY not in message

    asyncio.run(scenario())


def test_one_storage_across_event_loops(make_s3: S3Factory) -> None:
    storage = make_s3()
    asyncio.run(storage.put_bytes("t/loops/x", b"first"))
    assert asyncio.run(storage.get_bytes("t/loops/x")) == b"first"
    assert [info.key for info in asyncio.run(storage.list())] == ["t/loops/x"]


def test_describe_and_config_checks(make_s3: S3Factory, s3_bucket: str) -> None:
    # (The declared capabilities are held to their behaviour by the conformance suite, test_conformance.py.)
    storage = make_s3()
    assert storage.describe().startswith(f"s3 (s3://{s3_bucket}/{PREFIX}/ at http://127.0.0.1:")
    with pytest.raises(StorageError, match="sse_kms_key_id needs sse: aws:kms"):
        make_s3(sse_kms_key_id="alias/backups")


def test_conditional_put_sends_if_none_match(make_s3: S3Factory, moto_server: MotoServer, s3_bucket: str) -> None:
    async def scenario() -> None:
        async with Proxy(moto_server.url) as proxy:
            storage = make_s3(endpoint_url=proxy.url)
            await storage.put_bytes("t/m/manifest.json", b"{}", if_absent=True)
            assert b"if-none-match: *" in proxy.heads[-1].lower()
            with pytest.raises(ObjectExists, match=r"^s3: an object already exists at t/m/manifest.json$"):
                await storage.put_bytes("t/m/manifest.json", b"{2}", if_absent=True)
            await storage.put_bytes("t/m/manifest.json", b"{3}")  # unconditional: replaces
            assert b"if-none-match" not in proxy.heads[-1].lower()

    asyncio.run(scenario())
    body = moto_server.client().get_object(Bucket=s3_bucket, Key=f"{PREFIX}/t/m/manifest.json")["Body"].read()
    assert body == b"{3}"


def test_list_dirs_is_one_delimiter_listing(make_s3: S3Factory, moto_server: MotoServer) -> None:
    """Folders come from CommonPrefixes: one request however many objects lie below."""

    async def scenario() -> None:
        async with Proxy(moto_server.url) as proxy:
            storage = make_s3(endpoint_url=proxy.url)
            for number in range(5):
                await storage.put_bytes(f"app/b{number}/wal/{number}", b"-")
            proxy.heads.clear()
            assert await storage.list_dirs("app/") == [f"b{number}" for number in range(5)]
            assert len(proxy.heads) == 1 and b"delimiter=%2f" in proxy.heads[0].lower()

    asyncio.run(scenario())
