"""The one pg_restore call of restore and drills, and where its archive comes from (streamed or spooled).

pg_restore reads a stream from stdin with one job; parallel jobs need a seekable file, so the
verified archive is spooled to disk first. Connection details go through the libpq environment,
never the argument list.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from dbguardian.pipeline.process import Child
from dbguardian.pipeline.read import feed_program, read_verified, spooled_archive
from dbguardian.postgres import ConnectionInfo
from dbguardian.progress import Progress
from dbguardian.restore.locate import Located, read_options

Archive = AsyncIterator[bytes] | Path


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
) -> str:
    """Restore ``source`` into ``target``'s database with pg_restore ``tool``; returns how ("stream", "file, N jobs")."""
    argv = [tool, "--no-password", "--exit-on-error"]
    if no_owner:
        argv.append("--no-owner")
    if no_privileges:
        argv.append("--no-privileges")
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
