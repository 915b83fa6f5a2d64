"""Async stream plumbing: stages applied to chunk iterators, and external programs as filters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from dbguardian.errors import PipelineError
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.stages import Stage


async def through_stage(chunks: AsyncIterator[bytes], stage: Stage) -> AsyncIterator[bytes]:
    """Apply a chunk stage (compress, decompress) off the event loop, one bounded step at a time
    (``feed`` of a stage with ``quick_feed`` on it: it hands the chunk to threads of its own)."""
    quick = stage.quick_feed
    # The `del`s: a chunk already passed on is not kept alive by this frame while the next one is
    # awaited or consumed (each layer that held one kept another 1 MiB alive: issue 14).
    async for chunk in chunks:
        out = stage.feed(chunk) if quick else await asyncio.to_thread(stage.feed, chunk)
        del chunk
        while True:
            if out:
                yield out
            if not stage.pending:
                break
            out = await asyncio.to_thread(stage.more)
        del out
    tail = await asyncio.to_thread(stage.flush)
    if tail:
        yield tail


async def through_program(
    argv: list[str], chunks: AsyncIterator[bytes], *, env: Mapping[str, str] | None = None, what: str = ""
) -> AsyncIterator[bytes]:
    """Stream ``chunks`` through an external filter program (age, gpg) and yield its output.

    The program's failure (non-zero exit, error on stderr) is raised after its output ends, so a
    consumer never mistakes a truncated stream for a complete one.
    """
    async with Child(argv, env=env, stdin=True) as child:

        async def feed() -> None:
            try:
                async for chunk in chunks:
                    if not await child.write(chunk):
                        return  # it stopped reading: its exit status says why
                    del chunk  # (see through_stage)
            finally:
                await child.close_stdin()

        feeder = asyncio.create_task(feed())
        try:
            async for out in child.stdout_chunks():
                yield out
                del out
            await feeder
            await child.wait_checked()
        except PipelineError:
            raise
        finally:
            if not feeder.done():
                feeder.cancel()
                with contextlib.suppress(BaseException):
                    await feeder
