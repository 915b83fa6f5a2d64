"""Scratch databases and throw-away clusters, always cleaned up.

Restore stages into a scratch database before renaming it into place; drills restore into one and
drop it; schema and migration tooling will do the same. Whatever happens inside the ``async with``
(success, an error, cancellation), the scratch database is dropped and the throw-away cluster is
stopped and removed on the way out. A clean-up that fails does not hide the caller's own error, but
it is never silent either: it goes through :func:`dbguardian.cleanup.cleanup_failed` (an error line
naming what was left behind, and ``dbguardian_cleanup_failures_total{what}``).

``CREATE DATABASE`` cannot take bind parameters, and the encoding and locales usually come from a
backup's manifest, which an attacker who can write to the bucket controls. They are checked here
(a known encoding name, locale names of safe characters) and quoted as literals, so a manifest cannot
inject SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg

from dbguardian.cleanup import cleanup_failed
from dbguardian.dbfacts import quote_ident
from dbguardian.errors import DatabaseError, RestoreRefused, ToolError
from dbguardian.logs import get_logger
from dbguardian.postgres import ConnectionInfo, connect
from dbguardian.throwaway import ThrowawayCluster, find_server_bin, short_tempdir

log = get_logger("dbguardian.scratch")

MAX_DB_NAME = 63
_ENCODING = re.compile(r"[A-Za-z0-9_]{1,32}")
# Locale names as libc and ICU spell them: en_US.UTF-8, de_DE@euro, C, POSIX, und-u-ks-level2.
_LOCALE = re.compile(r"[A-Za-z0-9_.@=-]{1,128}")


class DatabaseLike(Protocol):
    """What a new database copies from its source: a manifest, or server facts of a live database."""

    @property
    def encoding(self) -> str: ...

    @property
    def lc_collate(self) -> str: ...

    @property
    def lc_ctype(self) -> str: ...


def quote_literal(value: str) -> str:
    """A standard SQL string literal; refuses what could change its meaning (backslashes, NULs, controls)."""
    if any(ch == "\\" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"{value!r} holds a backslash or control character")
    return "'" + value.replace("'", "''") + "'"


async def checked_settings(admin: asyncpg.Connection, name: str, like: DatabaseLike) -> tuple[str, str, str]:
    """``like``'s encoding, LC_COLLATE and LC_CTYPE as SQL literals, after checking each is what it claims."""
    encoding, collate, ctype = like.encoding, like.lc_collate, like.lc_ctype
    known = _ENCODING.fullmatch(encoding) and await admin.fetchval("SELECT pg_char_to_encoding($1) >= 0", encoding)
    if not known:
        raise RestoreRefused(
            f"refusing to create database {name!r}: encoding {encoding[:80]!r} is not a PostgreSQL encoding name "
            "(was the manifest changed?)"
        )
    for what, value in (("LC_COLLATE", collate), ("LC_CTYPE", ctype)):
        if not _LOCALE.fullmatch(value):
            raise RestoreRefused(
                f"refusing to create database {name!r}: {what} {value[:80]!r} is not a locale name "
                "(letters, digits and _ . @ = - only; was the manifest changed?)"
            )
    return quote_literal(encoding), quote_literal(collate), quote_literal(ctype)


@dataclass(frozen=True)
class ServerDefaults:
    """A server's defaults for a new database (template1's): the ``like`` of a database with no source."""

    encoding: str
    lc_collate: str
    lc_ctype: str


async def server_defaults(admin: asyncpg.Connection) -> ServerDefaults:
    row = await admin.fetchrow(
        "SELECT pg_encoding_to_char(encoding) AS encoding, datcollate, datctype FROM pg_database WHERE datname = 'template1'"
    )
    if row is None:
        raise DatabaseError("the server has no template1 database to take the encoding and locale from")
    return ServerDefaults(row["encoding"], row["datcollate"], row["datctype"])


async def create_database_like(admin: asyncpg.Connection, name: str, like: DatabaseLike) -> None:
    """An empty database with ``like``'s encoding and collation (from template0, so nothing else in it)."""
    if not name or len(name) > MAX_DB_NAME:
        raise DatabaseError(f"database name {name!r} must be 1 to {MAX_DB_NAME} characters")
    encoding, collate, ctype = await checked_settings(admin, name, like)
    try:
        await admin.execute(
            f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0 ENCODING {encoding} "
            f"LC_COLLATE {collate} LC_CTYPE {ctype}"
        )
    except asyncpg.PostgresError as error:
        raise DatabaseError(f"cannot create database {name!r}: {error}") from None


async def database_exists(admin: asyncpg.Connection, name: str) -> bool:
    return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))


async def admin_connection(server: ConnectionInfo) -> asyncpg.Connection:
    """A connection for CREATE/RENAME/DROP DATABASE: the maintenance database, else ``server``'s own."""
    try:
        return await connect(server.with_database("postgres"))
    except DatabaseError:
        return await connect(server)


@contextlib.asynccontextmanager
async def admin_session(server: ConnectionInfo) -> AsyncIterator[asyncpg.Connection]:
    """:func:`admin_connection`, closed on exit even when the caller is cancelled."""
    admin = await admin_connection(server)
    try:
        yield admin
    finally:
        await asyncio.shield(_close(admin))


async def _close(connection: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(connection.close(), timeout=5)
    except Exception:  # a broken connection: nothing left to close politely
        connection.terminate()


async def drop_database(admin: asyncpg.Connection, name: str, server: ConnectionInfo | None = None) -> bool:
    """Drop ``name`` (terminating its sessions). False, logged and counted when it could not be dropped.

    When ``admin`` is no longer usable (the server closed it), a fresh connection to ``server`` tries once more.
    """
    statement = f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"
    try:
        if admin.is_closed() and server is not None:
            async with admin_session(server) as fresh:
                await fresh.execute(statement)
        else:
            await admin.execute(statement)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, DatabaseError, OSError, TimeoutError) as error:
        cleanup_failed("staging_database", error, database=name)
        return False
    return True


@dataclass
class ScratchDatabase:
    """A database that exists for the length of an ``async with``; :meth:`keep` it to let it outlive that."""

    server: ConnectionInfo
    name: str
    admin: asyncpg.Connection
    kept: bool = False

    @property
    def info(self) -> ConnectionInfo:
        return self.server.with_database(self.name)

    def keep(self) -> None:
        """Do not drop on exit: the database was renamed into place or is meant to stay."""
        self.kept = True


@contextlib.asynccontextmanager
async def scratch_database(
    admin: asyncpg.Connection, server: ConnectionInfo, name: str, like: DatabaseLike
) -> AsyncIterator[ScratchDatabase]:
    """Create ``name`` like ``like`` on ``admin``'s server; drop it on exit unless kept."""
    await create_database_like(admin, name, like)
    scratch = ScratchDatabase(server, name, admin)
    try:
        yield scratch
    finally:
        if not scratch.kept:
            await asyncio.shield(drop_database(admin, name, server))


@contextlib.asynccontextmanager
async def throwaway_server(
    major: int, prefix: str = "dbg-scratch-", pg_bin_dirs: Sequence[Path] = ()
) -> AsyncIterator[ConnectionInfo]:
    """A fresh local PostgreSQL ``major`` cluster (or the oldest newer one installed: see
    :func:`find_server_bin`) in ``/tmp/<prefix>…`` (initdb, start); stopped and removed on exit."""
    bin_dir = await asyncio.to_thread(find_server_bin, major, pg_bin_dirs)
    cluster = ThrowawayCluster(short_tempdir(prefix), bin_dir=bin_dir)
    try:
        await asyncio.to_thread(cluster.start)
        yield ConnectionInfo(
            dsn=f"postgresql://postgres@/postgres?host={cluster.socket_dir}&port={cluster.port}",
            password=None,
            database="postgres",
        )
    finally:
        await asyncio.shield(asyncio.to_thread(remove_cluster, cluster, prefix))


def remove_cluster(cluster: ThrowawayCluster, prefix: str) -> None:
    """Stop the cluster and delete its directory; failures are logged and counted, never raised."""
    try:
        cluster.stop(strict=True)
    except (ToolError, OSError) as error:  # OSError: pg_ctl or runuser missing or not executable
        cleanup_failed("scratch_cluster", error, directory=str(cluster.base), left="a running server")
    # Only ever the directory throwaway_server created (short_tempdir(prefix)), nothing around it.
    if not cluster.base.name.startswith(prefix):
        cleanup_failed("scratch_cluster", "not a scratch cluster directory; left in place", directory=str(cluster.base))
        return
    try:
        shutil.rmtree(cluster.base)
    except FileNotFoundError:
        pass
    except OSError as error:
        cleanup_failed("scratch_cluster", error, directory=str(cluster.base), left="files")
