from __future__ import annotations

import asyncio

import click

from dbguardian.cli.common import policy_from
from dbguardian.daemon import run_daemon


@click.command("run")
@click.option("--stop-after", type=float, hidden=True, help="Stop after this many seconds (demos, benchmarks).")
@click.pass_context
def command(ctx: click.Context, stop_after: float | None) -> None:
    """Run the daemon: scheduled backups, catch-up, /metrics; SIGHUP reloads, SIGTERM stops."""
    policy = policy_from(ctx)
    ctx.exit(asyncio.run(run_daemon(ctx.obj["policy_path"], policy, stop_after)))
