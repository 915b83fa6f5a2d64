"""OAuth access tokens for the GCS backend, from gcloud-aio-auth's ``Token``, cached across event loops.

Where credentials come from: ``credentials_file`` (a service-account key or any other credentials
JSON that gcloud-aio-auth understands: authorized user, external account / workload identity
federation, impersonated service account), else the application default credentials in Google's
order (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's ``application_default_credentials.json``, the
GCE/GKE metadata server, which is how GKE Workload Identity hands out tokens), or none at all with
``anonymous: true`` (an emulator).

Why not ``Token.get()`` as it is: a ``Token`` keeps an aiohttp session of the loop it first ran on
and refreshes in a background task, while a storage object here outlives event loops (the CLI runs
several ``asyncio.run`` calls) and must not leave sessions or tasks behind. So only
``Token.refresh()`` (one token request, the credential-type logic) is used, on the caller's
session, through dbguardian's retry policy; the value is cached here until 5 minutes before it
expires. Its other retry (tenacity, in ``acquire_access_token``) is bypassed as well: a missing
metadata server fails in seconds, with one line, instead of after minutes.

The credentials file is read and parsed here first, on every refresh (a rotated key is picked
up): gcloud-aio-auth would quietly fall back to the metadata server on a file that is not JSON.
Nothing from the file (a private key) and no token ever goes into a message.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import weakref
from typing import Any, cast

import aiohttp
from gcloud.aio.auth import Token
from gcloud.aio.auth.session import AioSession

from dbguardian.errors import StorageError

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]
EARLY_REFRESH = 300.0
"""Seconds before a token's expiry at which it is replaced."""


class AccessTokens:
    """The bearer token of one storage entry (or none when anonymous)."""

    def __init__(self, name: str, credentials_file: Any, anonymous: bool) -> None:
        self.name = name
        self.credentials_file = credentials_file
        self.anonymous = anonymous
        self._value: str | None = None
        self._expires = 0.0  # time.monotonic() after which the value is not used
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def _service_file(self) -> io.StringIO | None:
        if self.credentials_file is None:
            return None  # application default credentials
        path = self.credentials_file
        try:
            text = path.read_text()
        except OSError as error:
            raise StorageError(f"{self.name}: cannot read credentials_file {path}: {error.strerror}") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise StorageError(f"{self.name}: credentials_file {path} is not JSON") from None
        if not isinstance(data, dict) or "type" not in data:
            raise StorageError(f"{self.name}: credentials_file {path} has no 'type' (expected a Google credentials JSON)")
        return io.StringIO(text)

    def _token(self, http: aiohttp.ClientSession) -> Token:
        try:
            return Token(service_file=self._service_file(), session=cast(Any, http), scopes=SCOPES)
        except StorageError:
            raise
        except Exception as error:  # unsupported credential type, missing fields
            raise StorageError(f"{self.name}: unusable Google credentials: {type(error).__name__}: {error}") from None

    async def headers(self, http: aiohttp.ClientSession, refresh: Any) -> dict[str, str]:
        """``{"Authorization": "Bearer ..."}`` (empty when anonymous).

        ``refresh(operation)`` runs the token request under the storage's retry policy and error wording.
        """
        if self.anonymous:
            return {}
        if self._value is None or time.monotonic() >= self._expires:
            loop = asyncio.get_running_loop()
            lock = self._locks.setdefault(loop, asyncio.Lock())
            async with lock:
                if self._value is None or time.monotonic() >= self._expires:
                    token = self._token(http)
                    token.session = AioSession(cast(Any, http))
                    response = await refresh(lambda: token.refresh(timeout=30))
                    lifetime = max(float(response.expires_in) - EARLY_REFRESH, 30.0)
                    self._value, self._expires = str(response.value), time.monotonic() + lifetime
        return {"Authorization": f"Bearer {self._value}"}
