"""The target's restore hooks (``hooks: {pre_restore: [...], post_restore: [...]}``) around a restore.

A hook is a program and its arguments, run without a shell (no quoting surprises, nothing from the
policy is ever interpreted), with the policy's ``timeout`` (killed, with its process group, when it
runs over). It gets what it may need in its environment, never a secret: ``DBGUARDIAN_HOOK``
(``pre_restore``/``post_restore``), ``DBGUARDIAN_TARGET``, ``DBGUARDIAN_DATABASE`` (the database restored
into), ``DBGUARDIAN_SERVER`` (user@host:port/database) and ``DBGUARDIAN_SOURCE`` (the backup id or file).
Its stdout is discarded and its stderr logged line by line.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from dbguardian.errors import DbguardianError, OperationError
from dbguardian.logs import get_logger
from dbguardian.pipeline.process import Child
from dbguardian.policy import HooksConfig

log = get_logger("dbguardian.restore")


class HookFailed(OperationError):
    """A restore hook exited non-zero, ran over its timeout or could not start."""


async def run_hook(name: str, hooks: HooksConfig, *, target: str, database: str, server: str, source: str) -> None:
    """Run hook ``name`` if the target has one; raises :class:`HookFailed` naming it and why."""
    argv: list[str] = getattr(hooks, name)
    if not argv:
        return
    env = {"DBGUARDIAN_HOOK": name, "DBGUARDIAN_TARGET": target, "DBGUARDIAN_DATABASE": database,
           "DBGUARDIAN_SERVER": server, "DBGUARDIAN_SOURCE": source}  # fmt: skip
    limit = hooks.timeout.total_seconds()
    started = time.monotonic()
    try:
        async with Child(argv, env=env, stdout=False) as child:
            try:
                await asyncio.wait_for(child.wait_checked(fail_on_error_lines=False), timeout=limit)
            except TimeoutError:
                raise HookFailed(f"{name} hook ({argv[0]}) ran over its timeout of {limit:g}s and was stopped") from None
    except HookFailed:
        raise
    except DbguardianError as error:  # exited non-zero, or cannot start
        raise HookFailed(f"{name} hook ({argv[0]}) failed: {error}") from None
    log.info("restore hook ran", hook=name, program=argv[0], seconds=round(time.monotonic() - started, 3))


@dataclass(frozen=True)
class RestoreHooks:
    """The target's hooks for one restore: ``before`` it touches anything, ``after`` it is in place."""

    hooks: HooksConfig
    target: str
    database: str
    server: str
    source: str

    async def _run(self, name: str) -> None:
        await run_hook(name, self.hooks, target=self.target, database=self.database, server=self.server,
                       source=self.source)  # fmt: skip

    async def before(self) -> None:
        await self._run("pre_restore")  # a failure stops the restore here: nothing touched yet

    async def after(self) -> None:
        try:
            await self._run("post_restore")
        except HookFailed as error:  # the restore itself is done and stays: say both
            raise HookFailed(f"restored {self.source} into {self.server}, but the {error}") from None
