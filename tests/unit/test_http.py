"""The daemon's HTTP listener over real sockets on 127.0.0.1: routes, HEAD, 404/405, and stalled clients."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import structlog

from dbguardian import http
from dbguardian.errors import OperationError
from dbguardian.http import Handler, HttpServer, Response

METRICS = b"# HELP up 1\nup 1\n"


async def _ready() -> Response:
    await asyncio.sleep(0)
    return Response(503, b"not ready: starting\n")


def _broken() -> Response:
    raise RuntimeError("boom")


ROUTES: dict[str, Handler] = {
    "/metrics": lambda: Response(200, METRICS, "text/plain; version=0.0.4; charset=utf-8"),
    "/healthz": lambda: Response(200, b"ok\n"),
    "/readyz": _ready,
    "/broken": _broken,
}


def serve(scenario: Callable[[HttpServer], Awaitable[None]]) -> None:
    async def main() -> None:
        server = HttpServer("127.0.0.1", 0, ROUTES)
        await server.start()
        try:
            await scenario(server)
        finally:
            await server.close()

    asyncio.run(main())


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` and read the whole answer (the request asks the server to close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


def request(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


def test_routes_status_body_and_content_type() -> None:
    async def scenario(server: HttpServer) -> None:
        assert server.port != 0  # port 0 asks for a free port; the real one is read back
        status, headers, body = await exchange(server.port, request("GET", "/metrics"))
        assert (status, body) == (200, METRICS)
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert headers["content-length"] == str(len(METRICS))
        assert (await exchange(server.port, request("GET", "/healthz")))[::2] == (200, b"ok\n")
        assert (await exchange(server.port, request("GET", "/readyz")))[::2] == (503, b"not ready: starting\n")
        assert (await exchange(server.port, request("GET", "/metrics?name=up")))[::2] == (200, METRICS)

    serve(scenario)


def test_head_sends_the_headers_without_the_body() -> None:
    async def scenario(server: HttpServer) -> None:
        status, headers, body = await exchange(server.port, request("HEAD", "/metrics"))
        assert (status, body) == (200, b"")
        assert headers["content-length"] == str(len(METRICS))
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"

    serve(scenario)


def test_unknown_path_404_other_methods_405() -> None:
    async def scenario(server: HttpServer) -> None:
        assert (await exchange(server.port, request("GET", "/nope")))[0] == 404
        assert (await exchange(server.port, request("GET", "/metrics/extra")))[0] == 404
        status, headers, _ = await exchange(server.port, request("POST", "/metrics"))
        assert status == 405
        assert "GET" in headers["allow"]
        assert (await exchange(server.port, request("DELETE", "/healthz")))[0] == 405

    serve(scenario)


def test_a_failing_handler_answers_500_and_the_server_keeps_serving() -> None:
    async def scenario(server: HttpServer) -> None:
        assert (await exchange(server.port, request("GET", "/broken")))[::2] == (500, b"internal error\n")
        assert (await exchange(server.port, request("GET", "/healthz")))[::2] == (200, b"ok\n")

    serve(scenario)


def test_a_stalled_client_does_not_delay_a_scrape() -> None:
    async def scenario(server: HttpServer) -> None:
        # One client connects and sends nothing, another sends half a request line and stops.
        _, silent = await asyncio.open_connection("127.0.0.1", server.port)
        _, half = await asyncio.open_connection("127.0.0.1", server.port)
        half.write(b"GET /metr")
        await half.drain()
        await asyncio.sleep(0.1)
        started = time.monotonic()
        status, _, body = await asyncio.wait_for(exchange(server.port, request("GET", "/metrics")), timeout=1)
        assert (status, body) == (200, METRICS)
        assert time.monotonic() - started < 1
        # Several scrapes in a row, while the stalled clients still hold their connections.
        for _ in range(5):
            assert (await asyncio.wait_for(exchange(server.port, request("GET", "/healthz")), timeout=1))[0] == 200
        silent.close()
        half.close()

    serve(scenario)


def test_close_does_not_wait_for_stalled_or_idle_clients() -> None:
    async def main() -> None:
        server = HttpServer("127.0.0.1", 0, ROUTES)
        await server.start()
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
        half_reader, half = await asyncio.open_connection("127.0.0.1", server.port)
        half.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        # A keep-alive client that got its answer and keeps the connection open.
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", server.port)
        idle.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await idle_reader.readuntil(b"ok\n")).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.1)

        started = time.monotonic()
        await asyncio.wait_for(server.close(), timeout=5)
        assert time.monotonic() - started < 1
        # The server hung up on all of them.
        for reader in (silent_reader, half_reader, idle_reader):
            assert await asyncio.wait_for(reader.read(), timeout=1) == b""
        for writer in (silent, half, idle):
            writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)

    asyncio.run(main())


def test_a_taken_port_is_a_one_line_operation_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main() -> None:
            server = HttpServer("127.0.0.1", port, ROUTES)
            with pytest.raises(OperationError, match=rf"cannot listen on 127\.0\.0\.1:{port}: "):
                await server.start()
            await server.close()  # nothing to close: harmless

        asyncio.run(main())


def test_malformed_requests_get_400_and_are_logged_by_us_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    # aiohttp's own loggers propagate to the root logger, which would print tracebacks between our JSON log lines.
    async def scenario(server: HttpServer) -> None:
        for raw in (
            b"GET /healthz HTTP/9.9\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"A" * 50,  # a TLS hello to a plain-HTTP port
        ):
            assert (await exchange(server.port, raw))[0] == 400
        assert (await exchange(server.port, request("GET", "/healthz")))[::2] == (200, b"ok\n")

    with caplog.at_level(logging.DEBUG), structlog.testing.capture_logs() as events:
        serve(scenario)
    assert [record.getMessage() for record in caplog.records if record.name.startswith("aiohttp")] == []
    assert not logging.getLogger("dbguardian.http.protocol").propagate
    protocol = [(event["log_level"], event["error"]) for event in events if event["event"] == "http protocol"]
    assert protocol == [("debug", "BadStatusLine"), ("debug", "LineTooLong"), ("debug", "BadHttpMethod")]


def test_stalled_connections_are_closed_after_the_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "KEEPALIVE_SECONDS", 0.3)

    async def scenario(server: HttpServer) -> None:
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
        half_reader, half = await asyncio.open_connection("127.0.0.1", server.port)
        half.write(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        for reader in (silent_reader, half_reader):
            assert await asyncio.wait_for(reader.read(), timeout=3) == b""
        assert 0.2 < time.monotonic() - started < 3
        silent.close()
        half.close()

    serve(scenario)
