from __future__ import annotations

import click

from dbguardian.alerts.dispatch import Alerter
from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import OperationError


@click.group("alert")
def command() -> None:
    """Alert channels."""


@command.command("test")
@click.pass_context
def test(ctx: click.Context) -> None:
    """Send a test message through every configured channel and report each result."""
    policy = policy_from(ctx.find_root())
    alerter = Alerter(policy)
    if not alerter.channels:
        raise OperationError("no alert channels configured (alerts: slack / email / webhook)")
    results = run_async(alerter.test)
    for name, result in sorted(results.items()):
        click.echo(f"{name:<8} {result}")
    if any(result != "ok" for result in results.values()):
        raise OperationError("at least one channel failed")
