"""Slack incoming webhook."""

from __future__ import annotations

import httpx

from dbguardian.alerts.model import Notification
from dbguardian.errors import OperationError


class SlackChannel:
    name = "slack"

    def __init__(self, webhook_url: str, timeout: float = 15) -> None:
        self._url = webhook_url
        self._timeout = timeout

    def payload(self, notification: Notification) -> dict[str, object]:
        fields = [
            {"type": "mrkdwn", "text": f"*Target*\n{notification.target}"},
            {"type": "mrkdwn", "text": f"*Check*\n{notification.check}"},
            {"type": "mrkdwn", "text": f"*Seen*\n{notification.observed}"},
            {"type": "mrkdwn", "text": f"*Expected*\n{notification.expected}"},
        ]
        if notification.since:
            fields.append({"type": "mrkdwn", "text": f"*Since*\n{notification.since}"})
        return {
            "text": f"{notification.title}: {notification.observed}",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": notification.title[:150]}},
                {"type": "section", "fields": fields},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Runbook: {notification.runbook}"}]},
            ],
        }

    async def send(self, notification: Notification) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            try:
                response = await client.post(self._url, json=self.payload(notification))
            except httpx.HTTPError as error:
                # Never include the URL: the webhook URL is the secret.
                raise OperationError(f"slack webhook unreachable: {type(error).__name__}") from None
        if response.status_code >= 300:
            raise OperationError(f"slack webhook answered HTTP {response.status_code}")
