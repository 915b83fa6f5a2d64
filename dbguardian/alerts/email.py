"""Email through SMTP (STARTTLS, TLS or plain), plain text plus HTML."""

from __future__ import annotations

import html
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from dbguardian.alerts.model import Notification
from dbguardian.errors import OperationError
from dbguardian.policy import EmailConfig


class EmailChannel:
    name = "email"

    def __init__(self, config: EmailConfig) -> None:
        self._config = config

    def message(self, notification: Notification) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = notification.title
        message["From"] = self._config.sender
        message["To"] = ", ".join(self._config.to)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="dbguardian")
        message.set_content(notification.text())
        rows = "".join(
            f"<tr><th align='left'>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
            for label, value in (
                ("Target", notification.target),
                ("Check", notification.check),
                ("Seen", notification.observed),
                ("Expected", notification.expected),
                ("Since", notification.since or "-"),
                ("Host", notification.host),
                ("Runbook", notification.runbook),
            )
        )
        message.add_alternative(
            f"<html><body><h2>{html.escape(notification.title)}</h2><table>{rows}</table></body></html>", subtype="html"
        )
        return message

    async def send(self, notification: Notification) -> None:
        config = self._config
        try:
            await aiosmtplib.send(
                self.message(notification),
                hostname=config.host,
                port=config.port,
                username=config.username,
                password=config.secret("password").resolve(),
                use_tls=config.tls == "tls",
                start_tls=config.tls == "starttls",
                timeout=config.timeout.total_seconds(),
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise OperationError(f"email via {config.host}:{config.port} failed: {type(error).__name__}: {error}") from None
