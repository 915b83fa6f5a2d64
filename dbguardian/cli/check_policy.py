from __future__ import annotations

import click

from dbguardian.cli.common import policy_from
from dbguardian.policy import summarize


@click.command("check-policy")
@click.pass_context
def command(ctx: click.Context) -> None:
    """Validate the policy file and print a one-line summary."""
    click.echo(summarize(policy_from(ctx)))
