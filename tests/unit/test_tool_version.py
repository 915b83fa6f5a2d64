"""pg_* program versions are recorded exactly as the program reports them."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from dbguardian.postgres import _by_likelihood, find_tool, parse_tool_version


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", (15, "15.18 (Debian 15.18-0+deb12u1)")),
        ("pg_dump (PostgreSQL) 16.4\n", (16, "16.4")),
        ("pg_restore (PostgreSQL) 17devel\n", (17, "17devel")),
        ("pg_dump (PostgreSQL) 14.13 (Ubuntu 14.13-0ubuntu0.22.04.1)\n", (14, "14.13 (Ubuntu 14.13-0ubuntu0.22.04.1)")),
        ("pg_dump (PostgreSQL) 9.6.24\n", (9, "9.6.24")),
        ("warning: something first\npg_dump (PostgreSQL) 15.2\n", (15, "15.2")),
        ("pg_dump (EnterpriseDB) 15.2\n", None),
        ("", None),
    ],
)
def test_parse_tool_version(output: str, expected: tuple[int, str] | None) -> None:
    assert parse_tool_version(output) == expected


@pytest.mark.parametrize("program", ["pg_dump", "pg_dumpall", "pg_restore"])
def test_real_program_version_is_what_it_reports(program: str) -> None:
    tool = asyncio.run(find_tool(program, 15))
    reported = subprocess.run([tool.path, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert reported == f"{program} (PostgreSQL) {tool.version}"
    assert tool.version.startswith("15.")  # what the manifest records; today it was "15.18-0+deb12u1)"


def test_candidates_are_probed_pg_bin_dirs_first_then_the_servers_major(tmp_path: Path) -> None:

    mine = tmp_path / "bin"
    candidates = [
        "/usr/bin/pg_dump",  # Debian's pg_wrapper on PATH
        "/usr/lib/postgresql/13/bin/pg_dump",
        "/usr/lib/postgresql/15/bin/pg_dump",
        "/usr/pgsql-15/bin/pg_dump",
        f"{mine}/pg_dump",
    ]
    assert _by_likelihood(candidates, 15, [mine]) == [
        f"{mine}/pg_dump",
        "/usr/lib/postgresql/15/bin/pg_dump",
        "/usr/pgsql-15/bin/pg_dump",
        "/usr/bin/pg_dump",
        "/usr/lib/postgresql/13/bin/pg_dump",
    ]
    assert _by_likelihood(candidates, 16, []) == candidates
