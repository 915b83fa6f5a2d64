"""``dbguardian reset-local`` and ``seed``: the one-command local database every developer needs.

``reset-local`` builds the new database beside the old one (schema file, or a backup restored, then
the optional anonymization script, then seed files) and only then replaces the old one, so a broken
seed file leaves the developer's database as it was. Both refuse a server that is not on this machine
(``localhost``, ``127.0.0.0/8``, ``::1``, a unix socket) unless told otherwise: a DSN pasted from the
wrong terminal must not drop a shared database.

SQL files run through ``psql`` with ``ON_ERROR_STOP``; a seed profile's files run in one transaction,
so a profile loads completely or not at all.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from dbguardian.dbfacts import count_rows
from dbguardian.errors import UsageError
from dbguardian.pipeline.process import Child
from dbguardian.policy import Policy
from dbguardian.postgres import ConnectionInfo, connected, find_tool, major_of, server_major_at
from dbguardian.restore.locate import locate, pg_restore_for
from dbguardian.restore.logical import staging_name, swap_into_place
from dbguardian.restore.pg_restore import archive, run_pg_restore
from dbguardian.scratch import admin_session, database_exists, scratch_database, server_defaults


def is_local(dsn: str) -> bool:
    """Whether ``dsn`` points at this machine: no host (libpq's unix socket), a socket directory,
    ``localhost``, an address in 127.0.0.0/8 or ``::1``."""
    parts = urlsplit(dsn)
    hosts = [parts.hostname or ""]
    query_host = dict(parse_qsl(parts.query)).get("host")
    if query_host is not None:
        hosts = query_host.split(",")
    for host in hosts:
        host = host.strip().strip("[]")
        if not host or host.startswith("/") or host.lower() == "localhost":
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        return False
    return True


def refuse_remote(dsn: str, allowed: bool) -> None:
    if not allowed and not is_local(dsn):
        raise UsageError(
            f"{urlsplit(dsn).hostname} is not this machine (localhost, 127.0.0.0/8, ::1 or a unix socket); "
            "pass --i-know-this-is-not-local to go ahead anyway"
        )


def seed_files(policy: Policy, names: list[str]) -> list[Path]:
    """``--seed`` values: profile names of the policy's ``seed.profiles`` (their files, relative to the
    policy file) or SQL files, in order."""
    base = policy.source_path.parent if policy.source_path is not None else Path.cwd()
    files: list[Path] = []
    for name in names:
        if name in policy.seed.profiles:
            files += [path if path.is_absolute() else base / path for path in policy.seed.profiles[name]]
        elif Path(name).is_file():
            files.append(Path(name))
        else:
            known = ", ".join(sorted(policy.seed.profiles)) or "none defined"
            raise UsageError(f"--seed {name!r} is neither a seed profile ({known}) nor a file")
    for path in files:
        if not path.is_file():
            raise UsageError(f"seed file {path} does not exist")
    return files


async def run_sql_files(policy: Policy, info: ConnectionInfo, files: list[Path], major: int) -> None:
    """``files`` through psql in one transaction, stopping at the first error."""
    if not files:
        return
    psql = await find_tool("psql", major, policy.pg_bin_dirs)
    argv = [psql.path, "--no-password", "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
            f"--dbname={info.database}", *(f"--file={path}" for path in files)]  # fmt: skip
    async with Child(argv, env=info.libpq_env(), stdout=False) as child:
        await child.wait_checked(fail_on_error_lines=False)


@dataclass
class LocalReport:
    database: str
    server: str
    source: str
    seeds: list[str]
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    replaced_existing: bool = False


async def _rows(info: ConnectionInfo) -> dict[str, int]:
    async with connected(info) as connection:
        return {count.qualified: count.rows for count in await count_rows(connection)}


async def seed(policy: Policy, info: ConnectionInfo, names: list[str]) -> LocalReport:
    """Load seed profiles / files into the existing database, in one transaction; the row counts after."""
    started = time.monotonic()
    files = seed_files(policy, names)
    await run_sql_files(policy, info, files, await server_major_at(info))
    return LocalReport(info.database, info.describe(), "existing database", [str(path) for path in files],
                       round(time.monotonic() - started, 3), await _rows(info))  # fmt: skip


async def reset_local(
    policy: Policy,
    info: ConnectionInfo,
    *,
    schema_file: Path | None = None,
    from_target: str | None = None,
    backup_ref: str = "latest",
    anonymize: Path | None = None,
    seeds: list[str] | None = None,
    identity: Path | None = None,
) -> LocalReport:
    """Replace ``info``'s database with a fresh one: the schema file or a restored backup, the anonymization
    script, then the seeds; the old database is dropped only once the new one is complete."""
    started = time.monotonic()
    files = seed_files(policy, seeds or [])
    if anonymize is not None and from_target is None:
        raise UsageError("--anonymize goes with --from (it runs on the restored data)")
    into = info.database
    source = "empty database"
    async with admin_session(info) as admin:
        major = await major_of(admin)
        exists = await database_exists(admin, into)
        async with scratch_database(admin, info, staging_name(into), await server_defaults(admin)) as staging:
            if schema_file is not None:
                source = f"schema {schema_file}"
                await run_sql_files(policy, staging.info, [schema_file], major)
            elif from_target is not None:
                located = await locate(policy, from_target, backup_ref)
                manifest = located.record.manifest
                source = f"backup {manifest.id} of {from_target}"
                pg_restore = await pg_restore_for(manifest, policy.pg_bin_dirs, major)
                async with archive(located, identity=identity, spool_dir=None) as stream:
                    await run_pg_restore(
                        pg_restore.path, staging.info, stream, no_owner=True, no_privileges=True, psql=pg_restore.psql
                    )
                if anonymize is not None:
                    source += f", anonymized by {anonymize}"
                    await run_sql_files(policy, staging.info, [anonymize], major)
            await run_sql_files(policy, staging.info, files, major)
            rows = await _rows(staging.info)
            await swap_into_place(staging, into, exists)
    return LocalReport(into, info.describe(), source, [str(path) for path in files], round(time.monotonic() - started, 3),
                       rows, exists)  # fmt: skip
