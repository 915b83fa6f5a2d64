"""``dbguardian export``: a backup as a plain local file, for people and tools that do not run dbguardian.

The dump object is read from its storage, its sha256 checked against the manifest, decrypted and
decompressed: the result is the pg_dump custom archive (``pg_restore`` reads it) or, with ``plain``,
the SQL script ``pg_restore --file=-`` makes of it (``psql`` reads it). A file is written beside its
final name, owner-only (0600), fsynced and renamed into place only once the checksum matched, so a
corrupt or tampered backup never leaves something that looks like a good export. To stdout (``-``)
the bytes go out as they come: a checksum mismatch is then reported at the end, with a failing exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from dbguardian.errors import UsageError
from dbguardian.files import fsync_dir, open_private
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.read import read_verified
from dbguardian.policy import Policy
from dbguardian.restore.locate import locate, pg_restore_for, read_options

ExportFormat = Literal["custom", "plain"]
STDOUT = Path("-")


@dataclass
class ExportReport:
    backup_id: str
    target: str
    storage: str
    format: str
    output: str
    bytes: int
    seconds: float


async def _plain(tool: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` (a custom archive) through ``pg_restore --file=-``: the SQL script."""
    async with Child([tool, "--no-password", "--file=-"], stdin=True) as child:

        async def feed() -> None:
            async for chunk in chunks:
                if not await child.write(chunk):
                    break
            await child.close_stdin()

        feeding = asyncio.create_task(feed())
        try:
            async for out in child.stdout_chunks():
                yield out
            await feeding  # the archive's checksum error, if any, is raised here
        finally:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeding
        await child.wait_checked()


async def _write(chunks: AsyncIterator[bytes], out: IO[bytes]) -> int:
    size = 0
    async for chunk in chunks:
        await asyncio.to_thread(out.write, chunk)
        size += len(chunk)
    await asyncio.to_thread(out.flush)
    return size


async def export_backup(
    policy: Policy,
    target_name: str,
    reference: str,
    output: Path,
    *,
    export_format: ExportFormat = "custom",
    identity: Path | None = None,
    from_storage: str | None = None,
    globals_only: bool = False,
) -> ExportReport:
    """Write backup ``reference`` of ``target_name`` to ``output`` (``-``: stdout) as ``export_format``;
    ``globals_only``: its roles and tablespaces instead (``pg_dumpall --globals-only`` SQL, for psql)."""
    started = time.monotonic()
    located = await locate(policy, target_name, reference, from_storage)
    manifest = located.record.manifest
    name = "globals" if globals_only else "dump"
    if name not in manifest.objects:
        raise UsageError(f"backup {manifest.id} of {target_name!r} holds no globals (the target has globals: false)")
    chunks = read_verified(located.storage, manifest.objects[name], **read_options(manifest, identity))
    if globals_only:
        export_format = "plain"  # it is SQL already
    elif export_format == "plain":
        tool = await pg_restore_for(manifest, policy.pg_bin_dirs)
        chunks = _plain(tool.path, chunks)
    if output == STDOUT:
        size = await _write(chunks, sys.stdout.buffer)
    else:
        output = output.absolute()
        temp = output.with_name(f".{output.name}.tmp-{secrets.token_hex(4)}")
        try:
            with open_private(temp, "wb", exclusive=True) as handle:
                size = await _write(chunks, handle)
                await asyncio.to_thread(os.fsync, handle.fileno())
            temp.replace(output)
            fsync_dir(output.parent)
        finally:
            temp.unlink(missing_ok=True)
    return ExportReport(
        backup_id=manifest.id,
        target=target_name,
        storage=located.storage.name,
        format=export_format,
        output=str(output),
        bytes=size,
        seconds=round(time.monotonic() - started, 3),
    )
