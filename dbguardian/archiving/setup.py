"""`dbguardian wal setup`: what the server's archive settings must be, compared with what they are.

:func:`advise` is pure (the server's ``pg_settings`` in, advice out); :func:`server_settings` reads them.

On PostgreSQL 15 and newer the archiver loads ``basic_archive`` (shipped with PostgreSQL) and writes each
finished segment into the spool itself — no process start per segment. On 13–14 there is no archive
library, so ``archive_command`` runs ``dbguardian wal-push`` (a durable copy into the spool). Either way
the daemon's WAL shipper takes the files from the spool to the storages. A 15+ server that already uses
``dbguardian wal-push`` through ``archive_command`` is accepted too.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg

from dbguardian.postgres import INCREMENTAL_BACKUP_MAJOR, server_major

ARCHIVE_TIMEOUT_SECONDS = 60
"""What `wal setup` asks for: a segment switch at least once a minute while anything is written."""

_READ = (
    "archive_mode",
    "archive_library",
    "archive_command",
    "archive_timeout",
    "basic_archive.archive_directory",
    "wal_level",
    "server_version_num",
    "summarize_wal",
)


@dataclass(frozen=True)
class Advice:
    setting: str
    wanted: str
    """The postgresql.conf line's value (quoted as it must be written)."""
    current: str | None
    ok: bool
    why: str = ""

    @property
    def line(self) -> str:
        return f"{self.setting} = {self.wanted}"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def wal_push_command(policy_path: Path | None, target: str | None, executable: Sequence[str] = ("dbguardian",)) -> str:
    """The ``archive_command`` for 13–14 (PostgreSQL substitutes ``%p``). ``executable``: how the server's
    OS user runs dbguardian (:func:`dbguardian.selfexec.dbguardian_executable`: an absolute path, as the
    archiver's ``PATH`` is the server's)."""
    argv = list(executable)
    if policy_path is not None:
        argv += ["--policy", str(policy_path)]
    argv.append("wal-push")
    if target is not None:
        argv += ["--target", target]
    return shlex.join(argv) + " %p"


def advise(
    settings: Mapping[str, str | None],
    spool: Path,
    rpo_target: timedelta,
    *,
    wal_push: str,
    incremental: bool = False,
) -> list[Advice]:
    """Each setting the archive needs, its wanted line, the current value and whether it already matches.

    ``settings``: ``pg_settings.setting`` by name (None when the server does not know the name, e.g.
    ``basic_archive.archive_directory`` before the library is loaded). ``incremental``: the target has
    an incremental physical tier (``summarize_wal`` is advised from PostgreSQL 17 on).
    """
    major = server_major(int(settings.get("server_version_num") or 0))
    advice: list[Advice] = []
    level = settings.get("wal_level")
    advice.append(Advice("wal_level", "replica", level, level in ("replica", "logical"),
                         "minimal WAL cannot be archived or replayed to a point in time"))  # fmt: skip
    mode = settings.get("archive_mode")
    advice.append(Advice("archive_mode", "on", mode, mode in ("on", "always"), "needs a server restart"))
    command = settings.get("archive_command") or ""
    library = settings.get("archive_library") or ""
    uses_wal_push = "wal-push" in command and not library
    if major >= 15 and not uses_wal_push:
        advice.append(Advice("archive_library", _quote("basic_archive"), library, library == "basic_archive",
                             "basic_archive writes each finished segment into the spool"))  # fmt: skip
        directory = settings.get("basic_archive.archive_directory")
        advice.append(Advice("basic_archive.archive_directory", _quote(str(spool)), directory,
                             directory is not None and Path(directory) == spool,
                             "the target's wal.spool: where the daemon's shipper picks segments up"))  # fmt: skip
    else:
        advice.append(Advice("archive_command", _quote(wal_push), command, uses_wal_push,
                             "copies each finished segment durably into the spool"))  # fmt: skip
    timeout = settings.get("archive_timeout")
    seconds = int(timeout) if timeout is not None and timeout.isdigit() else 0
    limit = max(1, int(rpo_target.total_seconds()))
    advice.append(Advice("archive_timeout", str(ARCHIVE_TIMEOUT_SECONDS), timeout, 0 < seconds <= limit,
                         f"a segment switch at least every {limit}s of writes keeps the RPO within rpo_target"))  # fmt: skip
    if incremental and major >= INCREMENTAL_BACKUP_MAJOR:
        summarize = settings.get("summarize_wal")
        advice.append(Advice("summarize_wal", "on", summarize, summarize == "on",
                             "incremental base backups need WAL summaries (without them, full ones)"))  # fmt: skip
    return advice


async def server_settings(connection: asyncpg.Connection) -> dict[str, str | None]:
    rows = await connection.fetch("SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])", list(_READ))
    found: dict[str, str | None] = {name: None for name in _READ}
    found.update({row["name"]: row["setting"] for row in rows})
    # A library's settings are placeholders in a client backend (only the archiver loads basic_archive):
    # pg_settings hides them, current_setting() still has the configured text.
    directory = await connection.fetchval("SELECT current_setting('basic_archive.archive_directory', true)")
    found["basic_archive.archive_directory"] = directory or found["basic_archive.archive_directory"]
    return found
