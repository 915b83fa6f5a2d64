"""The one pg_restore call of restore and drills, and where its archive comes from (streamed or spooled).

pg_restore reads a stream from stdin with one job; parallel jobs need a seekable file, so the
verified archive is spooled to disk first. Connection details go through the libpq environment,
never the argument list.

:func:`restore_and_check` runs pg_restore twice, ``--section=pre-data --section=data`` and then
``--section=post-data`` (indexes, constraints, triggers, ACLs that follow them), so that a check of the
loaded rows (the exact ``count(*)`` of every table) runs while the indexes are built instead of after
them: on a 2-CPU machine pg_restore's one job leaves a CPU to the counts (issue 14). The post-data run
needs only the archive's header and TOC (post-data items carry no data), which are kept as the stream
passes: a stream is read once. The two runs restore what one run restores (checked against a single
run's schema and data dumps: grants, comments, policies, default privileges, large objects, sequences;
tests/integration/test_backup_restore.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from dbguardian.logs import get_logger
from dbguardian.pipeline.dumpcount import head_length
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.read import feed_program, read_verified, spooled_archive
from dbguardian.postgres import ConnectionInfo
from dbguardian.progress import Progress
from dbguardian.restore.locate import Located, read_options

Archive = AsyncIterator[bytes] | Path
T = TypeVar("T")
HEAD_READ = 256 * 1024
"""How much of a spooled archive is read at a time while looking for the end of its TOC."""

log = get_logger("dbguardian.restore")


@contextlib.asynccontextmanager
async def archive(
    located: Located,
    *,
    identity: Path | None,
    spool_dir: Path | None,
    progress: Progress | None = None,
) -> AsyncIterator[Archive]:
    """The backup's dump archive, verified, decrypted, decompressed: a stream, or (``spool_dir`` given)
    a file there, fully read and checked before it is yielded and removed on exit. ``progress`` counts
    the stored bytes read; it is finished here once the spool is complete, else by the caller."""
    manifest = located.record.manifest
    dump = manifest.objects["dump"]
    options = read_options(manifest, identity)
    if spool_dir is None:
        yield read_verified(located.storage, dump, **options, progress=progress)
        return
    prefix = f"restore-{manifest.id}-"
    async with spooled_archive(
        located.storage, dump, **options, spool_dir=spool_dir, prefix=prefix, progress=progress
    ) as path:
        if progress is not None:
            progress.finish()  # the download is done; pg_restore's own time is not part of it
        yield path


async def run_pg_restore(
    tool: str,
    target: ConnectionInfo,
    source: Archive,
    *,
    jobs: int = 1,
    no_owner: bool = False,
    no_privileges: bool = False,
    sections: tuple[str, ...] = (),
    psql: str | None = None,
) -> str:
    """Restore ``source`` into ``target``'s database with pg_restore ``tool``; returns how ("stream", "file, N jobs").
    ``sections``: only these (pg_restore's ``--section``), else all. ``psql``: pg_restore writes a script
    that this psql runs (see :class:`dbguardian.restore.locate.RestoreTool`), in one job."""
    argv = [tool, "--no-password", "--exit-on-error", *(f"--section={section}" for section in sections)]
    if no_owner:
        argv.append("--no-owner")
    if no_privileges:
        argv.append("--no-privileges")
    if psql is not None:
        return await _as_script(argv, psql, target, source)
    argv.append(f"--dbname={target.database}")
    env = target.libpq_env()
    if isinstance(source, Path):
        async with Child([*argv, f"--jobs={jobs}", str(source)], env=env, stdout=False) as child:
            await child.wait_checked()
        return f"file, {jobs} jobs"
    if jobs > 1:
        raise ValueError("parallel pg_restore needs a spooled file, not a stream")
    async with Child(argv, env=env, stdin=True, stdout=False) as child:
        await feed_program(child, source)
        await child.wait_checked()
    return "stream"


async def restore_and_check(
    tool: str,
    target: ConnectionInfo,
    source: Archive,
    check: Callable[[], Coroutine[Any, Any, T]],
    *,
    jobs: int = 1,
    no_owner: bool = False,
    no_privileges: bool = False,
    psql: str | None = None,
) -> tuple[str, T]:
    """Restore ``source`` like :func:`run_pg_restore`, running ``check`` once the data is loaded, while
    pg_restore restores the post-data section. Returns how pg_restore ran and what ``check`` returned.

    An archive whose header this module cannot parse is restored in one run, then checked."""
    restore = functools.partial(
        run_pg_restore, tool, target, jobs=jobs, no_owner=no_owner, no_privileges=no_privileges, psql=psql
    )
    head, source = await _head(source)
    if head is None:
        return await restore(source), await check()
    mode = await restore(source, sections=("pre-data", "data"))
    post_data_source: Archive = source if isinstance(source, Path) else _single(head)
    checking = asyncio.create_task(check())
    try:
        await restore(post_data_source, sections=("post-data",))
    except BaseException:
        checking.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await checking
        raise
    return mode, await checking


async def _as_script(argv: list[str], psql: str, target: ConnectionInfo, source: Archive) -> str:
    """pg_restore ``argv`` writing SQL, run by ``psql`` without the prologue's ``SET transaction_timeout``."""
    env = target.libpq_env()
    reader = [*argv, "--file=-"] + ([str(source)] if isinstance(source, Path) else [])
    runner = [psql, "--no-password", "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", f"--dbname={target.database}"]
    async with (
        Child(reader, env=env, stdin=not isinstance(source, Path)) as writer,
        Child(runner, env=env, stdin=True, stdout=False) as loader,
    ):

        async def feed_writer() -> None:
            if not isinstance(source, Path):
                await feed_program(writer, source)

        async def feed_loader() -> None:
            await feed_program(loader, without_transaction_timeout(writer.stdout_chunks()))

        async with asyncio.TaskGroup() as group:
            group.create_task(feed_writer())
            group.create_task(feed_loader())
        await writer.wait_checked()
        await loader.wait_checked()
    return "script through psql"


PROLOGUE_LIMIT = 64 * 1024
"""A script's prologue (its SET lines) is far shorter; past this, the line is not looked for."""
_TIMEOUT_LINE = b"\nSET transaction_timeout = 0;\n"
_FIRST_ENTRY = re.compile(rb"\n-- (?:Data for )?Name: ")


async def without_transaction_timeout(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """pg_restore's script with its prologue's ``SET transaction_timeout = 0;`` line left out: the
    prologue ends at the first entry's ``-- Name:`` comment; everything after it passes untouched (a
    table's rows may hold that text)."""
    head: bytearray | None = bytearray()
    async for chunk in chunks:
        if head is None:
            yield chunk
            continue
        head += chunk
        entry = _FIRST_ENTRY.search(head)
        if entry is None and len(head) < PROLOGUE_LIMIT:
            continue
        yield _without_line(head, min(entry.start(), PROLOGUE_LIMIT) if entry is not None else PROLOGUE_LIMIT)
        head = None
    if head:
        yield _without_line(head, PROLOGUE_LIMIT)


def _without_line(head: bytearray, prologue_end: int) -> bytes:
    """``head`` without the first ``SET transaction_timeout`` line before ``prologue_end``."""
    return bytes(head[:prologue_end]).replace(_TIMEOUT_LINE, b"\n", 1) + bytes(head[prologue_end:])


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _head(source: Archive) -> tuple[bytes | None, Archive]:
    """The archive's header and TOC (None if they cannot be parsed), and the source to restore from: for
    a stream, the chunks read to find them followed by the rest (nothing is read twice or dropped)."""
    if isinstance(source, Path):
        return await asyncio.to_thread(_file_head, source), source
    seen: list[bytes] = []
    buffered = bytearray()
    head: bytes | None = None
    parse_at = 0  # parsed again only once the buffer doubled (a TOC of many MB comes in many chunks)
    async for chunk in source:
        seen.append(chunk)
        buffered += chunk
        if len(buffered) < parse_at:
            continue
        parse_at = 2 * len(buffered)
        head, done = _parsed_head(buffered)
        if done:
            break
    else:
        if buffered:  # the stream ended, maybe before a parse was due
            head, _ = _parsed_head(buffered)
    return head, _chained(seen, source)


def _parsed_head(buffered: bytearray) -> tuple[bytes | None, bool]:
    """The head if ``buffered`` holds it, and whether looking further is useless (found, or unknown)."""
    try:
        length = head_length(buffered)
    except ValueError as error:
        log.info("restoring in one pg_restore run", reason=str(error))
        return None, True
    return (None, False) if length is None else (bytes(buffered[:length]), True)


async def _chained(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    while first:
        yield first.pop(0)
    async for chunk in rest:
        yield chunk


def _file_head(path: Path) -> bytes | None:
    with path.open("rb") as handle:
        data = handle.read(HEAD_READ)
        while data:
            try:
                length = head_length(data)
            except ValueError:
                return None
            if length is not None:
                return data[:length]
            more = handle.read(len(data))  # doubling: parsed O(log n) times
            if not more:
                return None
            data += more
    return None
