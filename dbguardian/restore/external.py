"""Restore a dump made outside dbguardian (``restore --file``): a team's old backups, a dump from a vendor.

The format is read from the content, never the name: gzip or zstd compression by their magic numbers,
then pg_dump's custom archive (``PGDMP``), its tar archive (``ustar`` at byte 257), a directory archive
(a directory holding ``toc.dat``) or plain SQL text. The data goes through the same staging database
as every restore (refused over an existing database without ``--force``; a safety backup before
replacing one; the staging database dropped when anything fails), but there is no manifest: no
checksum and no row counts to compare, which the report says.

Plain SQL is run by ``psql`` in one transaction with ``ON_ERROR_STOP``; a script that switches
databases (``\\connect``, as ``pg_dumpall`` or ``pg_dump --create`` write) is refused before anything
runs, since it would write outside the staging database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dbguardian.errors import OperationError, UsageError
from dbguardian.logs import get_logger
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.read import feed_program
from dbguardian.pipeline.stages import decompressor
from dbguardian.pipeline.streams import through_stage
from dbguardian.policy import Policy
from dbguardian.postgres import ConnectionInfo, connection_info, find_tool, newest_tool, server_major_at
from dbguardian.restore.hooks import RestoreHooks
from dbguardian.restore.logical import SafetyBackup, check_into, staged, swap_into_place
from dbguardian.restore.pg_restore import run_pg_restore
from dbguardian.scratch import admin_session, server_defaults

log = get_logger("dbguardian.restore")

Compression = Literal["none", "gzip", "zstd"]
Kind = Literal["custom", "tar", "directory", "plain"]
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CUSTOM_MAGIC = b"PGDMP"
HEAD_SIZE = 64 * 1024
READ_CHUNK = 1024 * 1024
NO_MANIFEST = "no manifest: the dump was not checksummed and its row counts were not checked"


@dataclass(frozen=True)
class DumpFormat:
    compression: Compression
    kind: Kind

    def describe(self) -> str:
        kind = {"custom": "pg_dump custom archive", "tar": "pg_dump tar archive", "plain": "plain SQL",
                "directory": "pg_dump directory archive"}[self.kind]  # fmt: skip
        return kind if self.compression == "none" else f"{kind}, {self.compression}-compressed"


def compression_of(head: bytes) -> Compression:
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def kind_of(head: bytes) -> Kind:
    """What the (decompressed) first bytes are; raises when none of pg_dump's formats or SQL text."""
    if head.startswith(CUSTOM_MAGIC):
        return "custom"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head and b"\0" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start < len(head) - 3:  # not just a character cut at the end of the sample
                raise OperationError("the file is neither a pg_dump archive nor SQL text (not UTF-8)") from None
        return "plain"
    raise OperationError("the file is neither a pg_dump archive (custom, tar, directory) nor SQL text")


def switches_database(sql: bytes) -> bool:
    """Whether a plain SQL script has a line starting with ``\\connect`` / ``\\c`` (psql's meta-command)."""
    for line in sql.splitlines():
        stripped = line.lstrip()
        if stripped.startswith((b"\\connect", b"\\c ")) or stripped == b"\\c":
            return True
    return False


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
            yield chunk


def decoded(path: Path, compression: Compression) -> AsyncIterator[bytes]:
    return through_stage(_file_chunks(path), decompressor(compression))


async def detect(path: Path) -> DumpFormat:
    if path.is_dir():
        if (path / "toc.dat").is_file():
            return DumpFormat("none", "directory")
        raise UsageError(f"{path} is a directory without toc.dat; not a pg_dump directory archive")
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_SIZE)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    compression = compression_of(head)
    if compression != "none":
        sample = b""
        try:
            async for chunk in decoded(path, compression):
                sample += chunk
                if len(sample) >= HEAD_SIZE:
                    break
        except OperationError as error:
            raise OperationError(f"{path}: {compression} data that cannot be decompressed ({error})") from None
        head = sample[:HEAD_SIZE]
    return DumpFormat(compression, kind_of(head))


async def _check_plain(path: Path, compression: Compression) -> int:
    """Read the whole script once: it decompresses, and it never switches databases. Its size in bytes."""
    size, tail = 0, b""
    async for chunk in decoded(path, compression):
        size += len(chunk)
        window = tail + chunk
        if switches_database(window):
            raise OperationError(
                f"{path} switches databases (\\connect): a pg_dumpall or pg_dump --create script; restore it "
                "with psql yourself, or dump the one database without --create"
            )
        tail = window[-64:]
    return size


@dataclass
class FileRestoreReport:
    file: str
    format: str
    database: str
    server: str
    mode: str
    seconds: float
    checked: str = NO_MANIFEST
    safety_backup_id: str | None = None
    replaced_existing: bool = False


@dataclass
class FileValidateReport:
    file: str
    format: str
    raw_bytes: int
    toc_entries: int | None
    seconds: float
    checked: str = NO_MANIFEST


async def validate_file(policy: Policy, path: Path) -> FileValidateReport:
    """Read the whole file through its decompression and list it (pg_restore --list) or scan it (SQL)."""
    started = time.monotonic()
    found = await detect(path)
    entries: int | None = None
    if found.kind == "plain":
        size = await _check_plain(path, found.compression)
    else:
        pg_restore = await newest_tool("pg_restore", policy.pg_bin_dirs)  # reads the archives of every older major
        argv = [pg_restore.path, "--list"]
        size = 0
        if found.kind == "directory":
            argv += ["--format=directory", str(path)]
            async with Child(argv) as child:
                listing = b"".join([chunk async for chunk in child.stdout_chunks()])
                await child.wait_checked()
        else:
            async with Child(argv, stdin=True) as child:

                async def feed() -> None:
                    nonlocal size
                    async for chunk in decoded(path, found.compression):
                        size += len(chunk)
                        if not await child.write(chunk):
                            break
                    await child.close_stdin()

                feeding = asyncio.create_task(feed())
                listing = b"".join([chunk async for chunk in child.stdout_chunks()])
                await feeding
                await child.wait_checked()
        entries = sum(1 for line in listing.splitlines() if line and not line.startswith(b";"))
    return FileValidateReport(str(path), found.describe(), size, entries, round(time.monotonic() - started, 3))


async def restore_file(
    policy: Policy,
    target_name: str,
    path: Path,
    into: str,
    *,
    force: bool = False,
    jobs: int = 1,
    no_owner: bool = False,
    server: ConnectionInfo | None = None,
    safety_backup: SafetyBackup | None = None,
) -> FileRestoreReport:
    """Restore the dump at ``path`` into database ``into`` on the target's server (or ``server``)."""
    check_into(into)
    started = time.monotonic()
    found = await detect(path)
    if found.kind == "plain":
        await _check_plain(path, found.compression)  # before anything is created
        if jobs > 1:
            raise UsageError("--jobs applies to pg_dump archives; a plain SQL script runs in one psql session")
    target = policy.target(target_name)
    server = server or connection_info(target)
    where = server.with_database(into).describe()
    hooks = RestoreHooks(target.hooks, target_name, into, where, str(path))
    major = await server_major_at(server)
    await hooks.before()
    tool = await find_tool("psql" if found.kind == "plain" else "pg_restore", major, policy.pg_bin_dirs)
    async with admin_session(server) as admin:
        like = await server_defaults(admin)
        async with staged(admin, server, into, like, force=force, safety_backup=safety_backup) as stage:
            log.info("restore of a file started", file=str(path), format=found.describe(), staging=stage.database.name)
            info = stage.database.info
            if found.kind == "plain":
                mode = await _run_psql(tool.path, info, decoded(path, found.compression))
            elif found.kind == "directory" or (found.compression == "none" and jobs > 1):
                mode = await run_pg_restore(tool.path, info, path, jobs=jobs, no_owner=no_owner)
            elif jobs > 1:
                raise UsageError("--jobs needs an uncompressed archive file (pg_restore -j reads it in place)")
            else:
                mode = await run_pg_restore(tool.path, info, decoded(path, found.compression), no_owner=no_owner)
            await swap_into_place(stage.database, into, stage.replaces)
    report = FileRestoreReport(
        file=str(path),
        format=found.describe(),
        database=into,
        server=where,
        mode=mode,
        seconds=round(time.monotonic() - started, 3),
        safety_backup_id=stage.safety_backup_id,
        replaced_existing=stage.replaces,
    )
    log.info("restore of a file finished", **report.__dict__)
    await hooks.after()
    return report


async def _run_psql(tool: str, target: ConnectionInfo, chunks: AsyncIterator[bytes]) -> str:
    argv = [tool, "--no-password", "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
            f"--dbname={target.database}", "--file=-"]  # fmt: skip
    async with Child(argv, env=target.libpq_env(), stdin=True, stdout=False) as child:
        await feed_program(child, chunks)
        await child.wait_checked()
    return "psql, one transaction"
