"""`dbguardian restore-point TARGET NAME`: a named point to restore to later (``restore --pitr --to-name``)."""

from __future__ import annotations

import json

import click

from dbguardian.cli.common import policy_from, run_async


@click.command("restore-point")
@click.argument("target")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Return only when the WAL holding the point is on every storage.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds (default: wal.wait_for_wal).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(ctx: click.Context, target: str, name: str, wait: bool, timeout: float | None, as_json: bool) -> None:
    """Create restore point NAME on TARGET's server (pg_create_restore_point) and switch WAL so it is archived."""
    from dbguardian.restore.points import create_restore_point

    policy = policy_from(ctx)
    point = run_async(lambda: create_restore_point(policy, target, name, wait=wait, timeout=timeout))
    if as_json:
        click.echo(json.dumps(point.to_json()))
        return
    where = "on every storage" if point.archived else "switched out; the shipper will archive it"
    click.echo(f"restore point {point.name!r} at {point.lsn} in segment {point.segment} ({where})")
