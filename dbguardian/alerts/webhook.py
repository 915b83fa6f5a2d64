"""A generic JSON webhook: the notification as a JSON object."""

from __future__ import annotations

import httpx

from dbguardian.alerts.model import Notification
from dbguardian.errors import OperationError


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, timeout: float = 15) -> None:
        self._url = url
        self._timeout = timeout

    async def send(self, notification: Notification) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            try:
                response = await client.post(self._url, json={"source": "dbguardian", **notification.to_json()})
            except httpx.HTTPError as error:
                raise OperationError(f"webhook unreachable: {type(error).__name__}") from None
        if response.status_code >= 300:
            raise OperationError(f"webhook answered HTTP {response.status_code}")
