"""Dead-man pings (the healthchecks.io convention): GET start / success / fail URLs per backup job,
so an outside service notices when backups stop, even if the daemon itself is dead."""

from __future__ import annotations

import asyncio

import httpx

from dbguardian.errors import SecretUnavailable
from dbguardian.logs import get_logger, register_secret
from dbguardian.policy import PingsConfig

log = get_logger("dbguardian.pings")


async def ping(pings: PingsConfig, event: str, target: str, attempts: int = 3) -> bool:
    """Best effort: a failing ping is logged, never raised (it must not fail a backup)."""
    try:
        url = pings.secret(event).resolve()
    except SecretUnavailable as error:  # an unreadable *_file is reported like a failed ping
        log.error("ping url unreadable", target=target, ping=event, error=str(error))
        return False
    if url is None:
        return False
    register_secret(url)  # ping URLs carry their token: never log them
    for attempt in range(attempts):
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(url)
            if response.status_code < 300:
                return True
            problem = f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            problem = type(error).__name__
        log.warning("ping failed", target=target, ping=event, attempt=attempt + 1, error=problem)
        await asyncio.sleep(0.5 * 2**attempt)
    return False
