"""The daemon's one HTTP listener, served by the event loop itself (so /healthz proves the loop runs).

A deliberately tiny HTTP/1.1 server: GET and HEAD only, one request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dbguardian.errors import OperationError
from dbguardian.logs import get_logger

log = get_logger("dbguardian.http")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Response] | Response]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 503: "Service Unavailable"}


class HttpServer:
    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        except OSError as error:
            raise OperationError(f"cannot listen on {self.host}:{self.port}: {error.strerror or error}") from None
        socket = self._server.sockets[0]
        self.port = socket.getsockname()[1]
        log.info("http listening", address=f"{self.host}:{self.port}", paths=sorted(self.routes))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                method, path = _parse_request_line(head)
                response = await self._dispatch(method, path)
                reason = _REASONS.get(response.status, "")
                headers = (
                    f"HTTP/1.1 {response.status} {reason}\r\nContent-Type: {response.content_type}\r\n"
                    f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(headers.encode() + (b"" if method == "HEAD" else response.body))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _dispatch(self, method: str, path: str) -> Response:
        handler = self.routes.get(path.split("?", 1)[0])
        if handler is None:
            return Response(404, b"not found\n")
        if method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n")
        result = handler()
        return await result if isinstance(result, Awaitable) else result


def _parse_request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("bad request line")
    return parts[0], parts[1]
