"""The shared retry policy (dbguardian.storage.retry): what is retried, how often, what is raised."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import stamina

from dbguardian.errors import StorageError, TransientStorageError
from dbguardian.storage import retry
from dbguardian.storage.retry import RetryPolicy


@pytest.fixture(autouse=True)
def no_retry_waits() -> Iterator[None]:
    """Retries happen as configured, without their waits (stamina's test mode, attempts capped by the config)."""
    with stamina.set_testing(True, attempts=1000, cap=True):
        yield


class Flaky:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_transient_failures_are_retried_up_to_the_policy() -> None:
    told: list[tuple[int, float]] = []
    flaky = Flaky([TransientStorageError("blip"), TransientStorageError("blip")])
    result = asyncio.run(retry.call(flaky, RetryPolicy(2), on_retry=lambda _e, number, wait: told.append((number, wait))))
    assert (result, flaky.calls) == ("ok", 3)
    assert [attempt for attempt, _delay in told] == [1, 2]


def test_giving_up_reports_the_attempts() -> None:
    flaky = Flaky([TransientStorageError("blip")] * 5)

    def give_up(error: Exception, attempts: int) -> BaseException:
        return StorageError(f"{error} (gave up after {attempts} attempts)")

    with pytest.raises(StorageError, match=r"^blip \(gave up after 3 attempts\)$"):
        asyncio.run(retry.call(flaky, RetryPolicy(2), on_give_up=give_up))
    assert flaky.calls == 3


def test_permanent_failures_and_zero_retries_fail_at_once() -> None:
    flaky = Flaky([StorageError("denied")])
    with pytest.raises(StorageError, match="denied"):
        asyncio.run(retry.call(flaky, RetryPolicy(5)))
    assert flaky.calls == 1
    flaky = Flaky([TransientStorageError("blip")])
    with pytest.raises(TransientStorageError):
        asyncio.run(retry.call(flaky, RetryPolicy(0)))
    assert flaky.calls == 1


def test_a_classifier_decides_for_foreign_errors() -> None:
    flaky = Flaky([ConnectionResetError(), ValueError("bad")])
    with pytest.raises(ValueError, match="bad"):
        asyncio.run(retry.call(flaky, RetryPolicy(5), transient=lambda e: isinstance(e, ConnectionError)))
    assert flaky.calls == 2


def test_cancellation_is_never_retried() -> None:
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)

    async def scenario() -> None:
        task = asyncio.create_task(retry.call(slow, RetryPolicy(5), transient=lambda _e: True))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert calls == 1


def test_waits_grow_and_are_capped() -> None:
    policy = RetryPolicy(10, wait_initial=0.5, wait_max=4.0)
    with stamina.set_testing(False):
        delays = [policy.delay(number) for number in range(1, 8)]
    assert all(0.25 <= delay < 0.5 for delay in delays[:1])
    assert all(2.0 <= delay < 4.0 for delay in delays[3:])
    assert policy.delay(3) == 0.0  # the conftest's test mode: no waits
