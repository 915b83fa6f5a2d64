"""Real receivers for alert tests: an HTTP server recording JSON posts, an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import threading
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from dbguardian.throwaway import free_port


class HttpReceiver:
    """Stands in for Slack, a JSON webhook or a ping service: records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append((method, self.path, json.loads(body) if body else None))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_POST(self) -> None:
                self._record("POST")

            def do_GET(self) -> None:
                self._record("GET")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def posts(self, path: str) -> list[Any]:
        return [body for method, p, body in list(self.requests) if method == "POST" and p == path]

    def gets(self, path: str) -> int:
        return sum(1 for method, p, _ in list(self.requests) if method == "GET" and p == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """A real SMTP server on localhost; can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[Message] = []
        self.controller: Controller | None = None
        receiver = self

        class Handler:
            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
                message = message_from_bytes(content, policy=email_policy.default)
                message["X-Rcpt-To"] = ", ".join(envelope.rcpt_tos)
                receiver.messages.append(message)
                return "250 OK"

        self.handler = Handler()

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in list(self.messages)]
