"""docs/disaster-recovery.md's runnable blocks, run as written against a real PostgreSQL (the runbook cannot rot)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PolicyFactory, Postgres, cli_env
from tests.support.pg import backup

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "disaster-recovery.md"
BLOCK = re.compile(r"^```sh runnable\n(.*?)^```", re.S | re.M)


def runnable_blocks() -> list[str]:
    return BLOCK.findall(RUNBOOK.read_text())


def test_the_runbook_has_runnable_blocks_for_the_scenarios() -> None:
    blocks = runnable_blocks()
    assert len(blocks) >= 6
    text = "\n".join(blocks)
    for command in ("restore app --before", "restore app --into", "--force", "verify app --all", "export app", "drill app"):
        assert command in text, command


def test_every_runnable_block_runs(pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path) -> None:
    # Healthy by the checks' measure (the sample database is small), as a production target would be.
    policy = make_policy(database, extra={"health": {"min_size": "0", "min_count": 1}})
    backup(policy)
    bin_dir = Path(sys.executable).parent
    env = cli_env(DBGUARDIAN_POLICY=str(policy), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    created = ["app_before_mistake", "app_dr_migration", "app_dr_corruption"]
    try:
        for block in runnable_blocks():
            script = tmp_path / "block.sh"
            script.write_text("set -euo pipefail\n" + block)
            result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300,
                                    check=False)  # fmt: skip
            if result.returncode != 0:
                pytest.fail(f"runbook block failed ({result.returncode}):\n{block}\nstdout:\n{result.stdout}\n"
                            f"stderr:\n{result.stderr}")  # fmt: skip
        for name in created:
            assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1", name
    finally:
        for name in created:
            pg.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
