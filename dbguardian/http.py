"""The daemon's one HTTP listener (/metrics, /healthz, /readyz), served by aiohttp on the daemon's event loop,
so an answer from /healthz proves the loop runs.

Routes are plain callables returning a :class:`Response`; GET and HEAD are served, other methods get 405,
unknown paths 404. Each connection is handled on its own, so a client that connects and sends nothing
(or half a request) delays nobody; idle connections are closed after a short keep-alive, and closing the
server does not wait for them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from dbguardian.errors import OperationError
from dbguardian.logs import get_logger

log = get_logger("dbguardian.http")

# Scrapers reconnect cheaply; a connection idle (or stalled mid-request) this long is closed.
KEEPALIVE_SECONDS = 15.0
# Closing waits this long for a request being answered; idle connections are closed at once.
SHUTDOWN_SECONDS = 2.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Awaitable[Response] | Response]


class _IntoOurLog(logging.Handler):
    """aiohttp's protocol log into ours: a client's malformed request at debug, anything else as a warning.

    Left to stdlib logging, every bad request would print a traceback outside the JSON log lines.
    """

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        fields = {"detail": record.getMessage(), "error": type(error).__name__ if error else None}
        if isinstance(error, HttpProcessingError) or record.levelno < logging.WARNING:
            log.debug("http protocol", **fields)
        else:
            log.warning("http protocol", **fields, message=str(error).splitlines()[0] if error else None)


_protocol_log = logging.getLogger("dbguardian.http.protocol")
_protocol_log.propagate = False
_protocol_log.setLevel(logging.DEBUG)
_protocol_log.addHandler(_IntoOurLog())


class HttpServer:
    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        for path, handler in self.routes.items():
            app.router.add_get(path, _adapt(path, handler))  # add_get serves HEAD too
        runner = web.AppRunner(
            app,
            access_log=None,
            logger=_protocol_log,
            keepalive_timeout=KEEPALIVE_SECONDS,
            shutdown_timeout=SHUTDOWN_SECONDS,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
        except OSError as error:
            await runner.cleanup()
            raise OperationError(f"cannot listen on {self.host}:{self.port}: {error.strerror or error}") from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        log.info("http listening", address=f"{self.host}:{self.port}", paths=sorted(self.routes))

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def _adapt(path: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        try:
            result = handler()
            response = await result if isinstance(result, Awaitable) else result
        except Exception:
            log.exception("http handler failed", path=path)
            return web.Response(status=500, text="internal error\n")
        log.debug("http request", method=request.method, path=path, status=response.status)
        # content_type carries its charset: set the header as is (aiohttp's content_type= refuses parameters).
        return web.Response(status=response.status, body=response.body, headers={"Content-Type": response.content_type})

    return serve
