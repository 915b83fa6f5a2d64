"""Which server and client programs dbguardian picks when several majors are installed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dbguardian.errors import ToolError
from dbguardian.postgres import find_tool
from dbguardian.throwaway import find_server_bin
from tests.support.majors import newest_client_bin, server_bin


def test_a_throwaway_server_is_of_the_wanted_major_else_the_oldest_newer_one_never_older() -> None:
    dirs = [server_bin(18), server_bin(13), server_bin(16)]
    assert find_server_bin(13, dirs) == server_bin(13)
    assert find_server_bin(14, dirs) == Path("/usr/lib/postgresql/15/bin")  # Debian's 15 is installed too
    assert find_server_bin(17, dirs) == server_bin(18)
    assert find_server_bin(None, dirs) == server_bin(18)
    with pytest.raises(ToolError, match=r"no PostgreSQL 19 server or newer \(found: .*\(18\)"):
        find_server_bin(19, dirs)


def test_client_tools_of_the_server_major_else_the_oldest_newer_else_a_clear_refusal(tmp_path: Path) -> None:
    newest = [newest_client_bin()]
    assert asyncio.run(find_tool("pg_dump", 15, newest)).major == 15  # exact, from Debian, though 18 comes first
    assert asyncio.run(find_tool("pg_dump", 16, newest)).major == 18
    assert asyncio.run(find_tool("pg_dump", 13, newest)).major == 15
    with pytest.raises(ToolError) as refused:
        asyncio.run(find_tool("pg_combinebackup", 18, [tmp_path]))  # Debian's 15 has none
    assert "no pg_combinebackup for PostgreSQL 18 or newer (found: none; looked in pg_bin_dirs" in str(refused.value)
