"""docker-compose.local.yml: valid for docker-compose, and its one-shot reset works with the files it mounts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbguardian.policy import load_policy
from tests.conftest import PolicyFactory, Postgres, run_cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.local.yml"


def services() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return loaded


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts."""
    found: dict[str, Path] = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_docker_compose_accepts_it() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    result = subprocess.run([compose, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_the_reset_service_runs_reset_local_with_the_mounted_schema_and_seeds(
    pg: Postgres, database: str, make_policy: PolicyFactory
) -> None:
    reset = services()["reset"]
    words: list[str] = reset["command"]
    assert words[0] == "reset-local" and "--yes" in words
    assert reset["depends_on"]["postgres"]["condition"] == "service_healthy"
    files = mounts(reset)
    compose_policy = load_policy(files["/etc/dbguardian/policy.yaml"])
    schema = files[words[words.index("--schema") + 1]]
    profile = words[words.index("--seed") + 1]
    seeds = [files["/etc/dbguardian/seeds"] / path.relative_to("seeds") for path in compose_policy.seed.profiles[profile]]
    assert schema.is_file() and all(path.is_file() for path in seeds)

    # The same command against a real server, with the files it mounts: the example SQL works.
    policy = make_policy(database, extra={"seed": {"profiles": {profile: [str(path) for path in seeds]}}})
    local = "compose_local_dev"
    pg.psql(f"DROP DATABASE IF EXISTS {local}")
    result = run_cli(policy, "reset-local", "--dsn", pg.dsn(local), "--schema", str(schema), "--seed", profile, "--yes",
                     PGPASSWORD=pg.password)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "public.customers" in result.stdout and "10 rows" in result.stdout and "50 rows" in result.stdout
    pg.psql(f"DROP DATABASE {local} WITH (FORCE)")
