"""Glue shared by the commands: policy loading, running a coroutine with signal handling, errors."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from dbguardian.errors import DbguardianError, OperationError, PolicyError
from dbguardian.logs import redact_text
from dbguardian.policy import Policy, load_policy

T = TypeVar("T")


class Interrupted(OperationError):
    pass


def policy_from(ctx: click.Context) -> Policy:
    path: Path = ctx.obj["policy_path"]
    return load_policy(path)


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; SIGINT/SIGTERM cancel it (so children are killed and temp objects removed)."""

    async def runner() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[str] = []

        def on_signal(signum: signal.Signals) -> None:
            received.append(signum.name)
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await make()
        except asyncio.CancelledError:
            if received:
                raise Interrupted(f"interrupted by {received[0]}; the operation was abandoned and cleaned up") from None
            raise

    return asyncio.run(runner())


def fail(error: DbguardianError) -> None:
    """Print the error (one line per problem, no traceback) and exit with its code."""
    if isinstance(error, PolicyError):
        for problem in error.problems:
            click.echo(redact_text(problem), err=True)
    else:
        click.echo(f"error: {redact_text(str(error))}", err=True)
    sys.exit(error.exit_code)
