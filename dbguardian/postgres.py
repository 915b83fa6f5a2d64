"""PostgreSQL access: connections (asyncpg), libpq environment for the pg_* programs, tool discovery."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import asyncpg

from dbguardian.errors import DatabaseError, ToolError, UsageError
from dbguardian.logs import get_logger, redact_text, register_secret
from dbguardian.policy import TargetConfig

log = get_logger("dbguardian.postgres")

# libpq URL query parameters and the environment variables that carry them.
_QUERY_ENV = {
    "host": "PGHOST",
    "port": "PGPORT",
    "user": "PGUSER",
    "dbname": "PGDATABASE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "options": "PGOPTIONS",
}


@dataclass(frozen=True)
class ConnectionInfo:
    """A target's connection split into a password-free DSN and the password itself."""

    dsn: str
    password: str | None
    database: str

    def with_database(self, database: str) -> ConnectionInfo:
        parts = urlsplit(self.dsn)
        return ConnectionInfo(dsn=urlunsplit(parts._replace(path="/" + database)), password=self.password, database=database)

    def libpq_env(self) -> dict[str, str]:
        """Environment for pg_dump & co.: connection in PG* variables, never in the argument list."""
        parts = urlsplit(self.dsn)
        env: dict[str, str] = {"PGDATABASE": self.database}
        if parts.hostname:
            env["PGHOST"] = unquote(parts.hostname)
        if parts.port:
            env["PGPORT"] = str(parts.port)
        if parts.username:
            env["PGUSER"] = unquote(parts.username)
        for key, value in parse_qsl(parts.query):
            if key in _QUERY_ENV:
                env[_QUERY_ENV[key]] = value
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def describe(self) -> str:
        env = self.libpq_env()
        return f"{env.get('PGUSER', '?')}@{env.get('PGHOST', 'localhost')}:{env.get('PGPORT', '5432')}/{self.database}"


def connection_info(target: TargetConfig) -> ConnectionInfo:
    parts = urlsplit(target.dsn)
    password = unquote(parts.password) if parts.password else None
    configured = target.secret("password").resolve()
    if configured is not None:
        password = configured
    return _split(target.dsn, password)


def connection_info_from_dsn(dsn: str, password_file: Path | None = None) -> ConnectionInfo:
    """A server named on the command line (``--dsn``): restore onto another host without editing the policy.

    The password comes from ``password_file``, else ``$PGPASSWORD``, else libpq's ``~/.pgpass``; never from
    the URL, which would show in the process list.
    """
    parts = urlsplit(dsn)
    if parts.scheme not in {"postgresql", "postgres"} or not (parts.hostname or parse_qsl(parts.query)):
        raise UsageError(
            f"--dsn must be a postgresql:// URL with a host, e.g. postgresql://user@db2:5432/app (got {redact_text(dsn)!r})"
        )
    if parts.password:
        raise UsageError(
            "--dsn must not contain a password (it would show in the process list); use $PGPASSWORD or --password-file"
        )
    password = None
    if password_file is not None:
        try:
            password = password_file.read_text().strip() or None
        except OSError as error:
            raise UsageError(f"cannot read password file {password_file}: {error.strerror or error}") from None
    else:
        password = os.environ.get("PGPASSWORD") or None
    return _split(dsn, password)


def _split(dsn: str, password: str | None) -> ConnectionInfo:
    parts = urlsplit(dsn)
    register_secret(password)
    netloc = parts.hostname or ""
    if parts.hostname and ":" in parts.hostname:
        netloc = f"[{parts.hostname}]"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    query_db = dict(parse_qsl(parts.query)).get("dbname")
    database = query_db or unquote(parts.path.lstrip("/"))
    dsn = urlunsplit(parts._replace(netloc=netloc))
    return ConnectionInfo(dsn=dsn, password=password, database=database)


def _database_error(info: ConnectionInfo, error: BaseException) -> DatabaseError:
    detail = redact_text(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    return DatabaseError(f"cannot connect to {info.describe()}: {detail}")


async def connect(info: ConnectionInfo, timeout: float = 15) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            dsn=info.dsn,
            password=info.password,
            timeout=timeout,
            server_settings={"application_name": "dbguardian"},
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise _database_error(info, error) from None
    except ValueError as error:  # asyncpg's DSN parser
        raise _database_error(info, error) from None


@contextlib.asynccontextmanager
async def connected(info: ConnectionInfo) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect(info)
    try:
        yield connection
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), timeout=5)
        if not connection.is_closed():
            connection.terminate()


INCREMENTAL_BACKUP_MAJOR = 17
"""The first PostgreSQL with incremental base backups (WAL summaries, pg_basebackup --incremental)."""


def server_major(server_version_num: int) -> int:
    return server_version_num // 10000


async def major_of(connection: asyncpg.Connection) -> int:
    """The connected server's major version (which client tools to use with it)."""
    return server_major(int(await connection.fetchval("SHOW server_version_num")))


async def server_major_at(info: ConnectionInfo) -> int:
    """Connect to ``info`` just to learn its server's major version."""
    async with connected(info) as connection:
        return await major_of(connection)


@dataclass(frozen=True)
class Tool:
    path: str
    major: int
    version: str
    """As the program reports it after ``(PostgreSQL)``: ``15.18 (Debian 15.18-0+deb12u1)``."""


# "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)": the version is everything after "(PostgreSQL)".
_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)\S*(?:\s.*)?)$")


def parse_tool_version(output: str) -> tuple[int, str] | None:
    """``(major, version)`` from a pg_* program's ``--version`` output, the version exactly as reported
    (``15.18 (Debian 15.18-0+deb12u1)``, ``17devel``); None if it is not a PostgreSQL program."""
    for line in output.splitlines():
        match = _VERSION.search(line.strip())
        if match:
            return int(match.group(2)), match.group(1).strip()
    return None


def _candidates(name: str, extra_dirs: list[Path]) -> list[str]:
    found: list[str] = []
    for directory in extra_dirs:
        path = directory / name
        if path.is_file() and os.access(path, os.X_OK):
            found.append(str(path))
    on_path = shutil.which(name)
    if on_path:
        found.append(on_path)
    found.extend(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")))
    found.extend(sorted(glob.glob(f"/usr/pgsql-*/bin/{name}")))
    unique: list[str] = []
    for candidate in found:
        real = os.path.realpath(candidate)
        if real not in unique:
            unique.append(real)
    return unique


async def newest_tool(name: str, extra_dirs: list[Path] | None = None) -> Tool:
    """The newest ``name`` found (for reading an archive of unknown origin: newer tools read older archives)."""
    tools = [tool for path in _candidates(name, extra_dirs or []) if (tool := await _tool_version(path))]
    if not tools:
        raise ToolError(f"no {name} found; install the PostgreSQL client tools or add their directory to pg_bin_dirs")
    return max(tools, key=lambda tool: tool.major)


def _by_likelihood(candidates: list[str], major: int, extra_dirs: list[Path]) -> list[str]:
    """``pg_bin_dirs`` first (the user's choice), then the usual directory of that major, then the rest."""
    chosen = {os.path.realpath(directory / "x").removesuffix("x") for directory in extra_dirs}
    markers = (f"/postgresql/{major}/bin/", f"/pgsql-{major}/bin/")

    def rank(path: str) -> int:
        if any(path.startswith(directory) for directory in chosen):
            return 0
        return 1 if any(marker in path for marker in markers) else 2

    return sorted(candidates, key=rank)  # stable: the discovery order within each rank


async def _tool_version(path: str) -> Tool | None:
    try:
        process = await asyncio.create_subprocess_exec(
            path, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=10)
    except (TimeoutError, OSError):
        return None
    parsed = parse_tool_version(out.decode(errors="replace"))
    if parsed is None:
        return None
    return Tool(path=path, major=parsed[0], version=parsed[1])


async def find_tool(name: str, major: int, extra_dirs: list[Path] | None = None) -> Tool:
    """The ``name`` program (pg_dump, pg_restore, ...) matching server ``major``; a newer one if no exact match.

    pg_dump refuses to dump a server newer than itself, and a newer pg_dump reads older servers, so an
    older tool is never used.
    """
    tools: list[Tool] = []
    for path in _by_likelihood(_candidates(name, extra_dirs or []), major, extra_dirs or []):
        # Probed one at a time, stopping at the first exact match: each probe is a process (Debian's
        # pg_wrapper on PATH is a Perl script, ~0.1 s), paid by every backup.
        tool = await _tool_version(path)
        if tool is None:
            continue
        if tool.major == major:
            return tool
        tools.append(tool)
    newer = sorted((tool for tool in tools if tool.major > major), key=lambda tool: tool.major)
    if newer:
        log.warning("no exact tool version", program=name, server_major=major, using=newer[0].path)
        return newer[0]
    seen = ", ".join(f"{tool.path} ({tool.major})" for tool in tools) or "none"
    raise ToolError(
        f"no {name} for PostgreSQL {major} or newer (found: {seen}; looked in {_searched(extra_dirs or [])}); "
        f"an older {name} cannot work with a PostgreSQL {major} server: install the PostgreSQL {major} client "
        f"tools or add their directory to pg_bin_dirs"
    )


async def find_exact_tool(name: str, major: int, extra_dirs: list[Path], *, needed_by: str) -> Tool:
    """``name`` of exactly ``major``: server programs (pg_ctl) and pg_combinebackup work only on their own
    major's data directories, so no newer one will do. ``needed_by`` names what needs it in the refusal."""
    tool = await find_tool(name, major, extra_dirs)
    if tool.major != major:
        raise ToolError(f"{needed_by} is PostgreSQL {major}; found only {tool.path} ({tool.major})")
    return tool


def _searched(extra_dirs: list[Path]) -> str:
    """Where :func:`_candidates` looks, for error messages."""
    places = [f"pg_bin_dirs {', '.join(map(str, extra_dirs))}"] if extra_dirs else ["pg_bin_dirs (none set)"]
    return ", ".join([*places, "PATH", "/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"])
