"""Retries for storage requests: one policy for every backend, on ``stamina``.

A request is retried only when its failure is transient (``TransientStorageError``, or what the
backend's own classifier says, e.g. S3's throttling codes and dropped connections); anything else
fails at once. ``retries`` (the policy key of a storage entry) counts the attempts after the first.
Waits grow exponentially from ``wait_initial`` up to ``wait_max``, each scaled by a random factor in
[0.5, 1) so that many writers do not retry in step.

stamina's own instrumentation (a structlog warning per retry and a Prometheus counter in the
default registry) is switched off: callers log the retry with their context (storage, key, action)
through ``on_retry``, and dbguardian's metrics live in their own registry. Tests may call
``stamina.set_testing(True, attempts=..., cap=True)``: no waits, the configured attempts kept.

Never retried: ``asyncio.CancelledError`` and other ``BaseException`` (a cancelled job must stop).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina
from stamina import instrumentation

from dbguardian.errors import TransientStorageError

T = TypeVar("T")

instrumentation.set_on_retry_hooks([])


def is_transient(error: BaseException) -> bool:
    """The backend-neutral part of the classification: errors raised as transient on purpose."""
    return isinstance(error, TransientStorageError)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int
    """Attempts after the first; 0 = no retry."""
    wait_initial: float = 0.5
    wait_max: float = 20.0

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        if stamina.is_testing():
            return 0.0
        return min(self.wait_max, self.wait_initial * 2.0 ** (retry_number - 1)) * random.uniform(0.5, 1.0)


async def call(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    transient: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[Exception, int, float], None] | None = None,
    on_give_up: Callable[[Exception, int], BaseException] | None = None,
) -> T:
    """Run ``operation`` (a fresh request per call), retrying transient failures.

    ``on_retry(error, attempt, delay)`` is told before each wait; ``on_give_up(error, attempts)``
    turns the final failure into the error to raise (by default the failure itself).
    """
    attempts = 0
    retries_done = 0

    def backoff(error: Exception) -> bool | float:
        nonlocal retries_done
        if not isinstance(error, Exception) or not transient(error) or retries_done >= policy.retries:
            return False
        retries_done += 1
        delay = policy.delay(retries_done)
        if on_retry is not None:
            on_retry(error, attempts, delay)
        return delay

    try:
        async for attempt in stamina.retry_context(on=backoff, attempts=policy.retries + 1, timeout=None):
            with attempt:
                attempts = attempt.num
                return await operation()
    except Exception as error:
        if on_give_up is None:
            raise
        raise on_give_up(error, attempts) from None
    raise AssertionError("unreachable: stamina ran out of attempts without an error")
