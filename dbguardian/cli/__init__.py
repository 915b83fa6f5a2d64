"""The ``dbguardian`` command line: one module per command, each thin glue over the library.

Exit codes: 0 ok, 1 the operation failed, 2 bad usage or bad policy.

This module imports only the standard library: the click group lives in :mod:`dbguardian.cli.app`,
and the policy models and the logging setup are loaded when a command needs them. PostgreSQL runs
`wal-push` and `wal-fetch` once per WAL segment, so both must start fast; `wal-fetch` answered by the
prefetch queue does not even get here (:mod:`dbguardian.entry`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click

# Same as dbguardian.policy.DEFAULT_POLICY_PATH (a unit test checks), not imported from there: the
# policy package pulls in pydantic, which commands without a policy should not pay for.
DEFAULT_POLICY_PATH = Path("/etc/dbguardian/policy.yaml")

# Command name -> module (each defines ``command``). Loaded on first use, so `dbguardian backup`
# does not pay for importing the daemon, the alert channels or the S3 client.
COMMANDS = {
    "check-policy": "check_policy",
    "backup": "backup",
    "list": "list_backups",
    "restore": "restore",
    "export": "export",
    "verify": "verify",
    "drill": "drill",
    "prune": "prune",
    "check": "check",
    "alert": "alert",
    "run": "run",
    "plan": "plan",
    "demo": "demo",
    "wal-push": "wal_push",
    "wal-fetch": "wal_fetch",
    "restore-point": "restore_point",
    "wal": "wal",
    "schema": "schema",
    "migrations": "migrations",
    "reset-local": "reset_local",
    "seed": "seed",
}

# Commands that need no logging setup (they print one line on failure and exit).
WITHOUT_LOGGING = {"wal-push", "wal-fetch"}


def __getattr__(name: str) -> click.Group:
    if name == "cli":  # the click group, for tests and embedding: `from dbguardian.cli import cli`
        from dbguardian.cli.app import cli

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    from dbguardian.cli.app import cli

    try:
        cli.main(prog_name="dbguardian", standalone_mode=True)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(1)
