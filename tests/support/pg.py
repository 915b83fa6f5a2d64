"""Helpers for tests that look inside databases."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from dbguardian.dbfacts import content_checksums
from dbguardian.postgres import ConnectionInfo, connected
from tests.conftest import Postgres, run_cli


def checksums(pg: Postgres, database: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        async with connected(ConnectionInfo(pg.dsn(database), pg.password, database)) as connection:
            return await content_checksums(connection)

    return asyncio.run(read())


def listed(policy: Path, *target: str) -> list[dict[str, Any]]:
    result = run_cli(policy, "list", *target, "--json")
    assert result.returncode == 0, result.stderr
    data: list[dict[str, Any]] = json.loads(result.stdout)
    return data


def backup(policy: Path, *args: str) -> str:
    result = run_cli(policy, "backup", "app", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]
