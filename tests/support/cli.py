"""The CLI run in-process (click's test runner) for argument and policy checks that fail before any I/O.

A subprocess (``tests.conftest.run_cli``) costs ~1 s of interpreter and import start-up per call; the
fast lane has a budget of 30 s, so tests whose subject is the CLI's parsing and messages use this, and
the tests of real runs (exit codes seen by a shell, signals, servers) keep the subprocess.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import structlog
from click.testing import CliRunner


def invoke_cli(policy: Path | None, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``dbguardian [--policy P] ARGS`` in this process; the result has the shape of ``run_cli``'s."""
    from dbguardian.cli.app import cli

    argv = ["--log-format", "json", *(["--policy", str(policy)] if policy is not None else []), *args]
    # Unset what the caller's environment might set, as cli_env does for the subprocess.
    environment: dict[str, str | None] = {"DBGUARDIAN_POLICY": None, "PGPASSWORD": None, "PGSERVICE": None}
    environment.update(env)
    try:
        result = CliRunner().invoke(cli, argv, env=environment, catch_exceptions=False)
    finally:
        structlog.reset_defaults()  # logs.configure bound the runner's (now closed) stderr
    return subprocess.CompletedProcess(["dbguardian", *argv], result.exit_code, result.stdout, result.stderr)
