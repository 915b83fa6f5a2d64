"""The ``dbguardian`` command line: one module per command, each thin glue over the library.

Exit codes: 0 ok, 1 the operation failed, 2 bad usage or bad policy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from dbguardian import __version__, logs
from dbguardian.cli.common import fail
from dbguardian.errors import DbguardianError
from dbguardian.policy import DEFAULT_POLICY_PATH


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DbguardianError as error:
            fail(error)
            raise AssertionError("unreachable") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dbguardian", message="%(prog)s %(version)s")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=lambda: os.environ.get("DBGUARDIAN_POLICY", str(DEFAULT_POLICY_PATH)),
    show_default="$DBGUARDIAN_POLICY, else /etc/dbguardian/policy.yaml",
    help="The policy file.",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default="auto", type=click.Choice(["auto", "json", "console"]))
@click.pass_context
def cli(ctx: click.Context, policy_path: Path, log_level: str, log_format: str) -> None:
    """dbguardian keeps PostgreSQL databases recoverable."""
    logs.configure(log_level, json=None if log_format == "auto" else log_format == "json")
    ctx.obj = {"policy_path": policy_path}


def _register() -> None:
    from dbguardian.cli import (
        alert,
        backup,
        check,
        check_policy,
        demo,
        drill,
        list_backups,
        plan,
        prune,
        restore,
        run,
        verify,
    )

    modules = (check_policy, backup, list_backups, restore, verify, drill, prune, check, alert, run, plan, demo)
    for module in modules:
        cli.add_command(module.command)


_register()


def main() -> None:
    try:
        cli.main(prog_name="dbguardian", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(1)
