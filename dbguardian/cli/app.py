"""The click group of the ``dbguardian`` command line (see :mod:`dbguardian.cli`): loaded only when a
command goes through click; ``wal-fetch`` served from the prefetch queue never loads click at all."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import click

from dbguardian.cli import COMMANDS, DEFAULT_POLICY_PATH, WITHOUT_LOGGING
from dbguardian.errors import DbguardianError


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from dbguardian import __version__  # not at import: the version lookup is slow

        click.echo(f"dbguardian {__version__}")
        ctx.exit()


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"dbguardian.cli.{module_name}")
        command: click.Command = module.command
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DbguardianError as error:
            from dbguardian.cli.common import fail

            fail(error)
            raise AssertionError("unreachable") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
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
    if ctx.invoked_subcommand not in WITHOUT_LOGGING:
        from dbguardian import logs

        logs.configure(log_level, json=None if log_format == "auto" else log_format == "json")
    ctx.obj = {"policy_path": policy_path}
