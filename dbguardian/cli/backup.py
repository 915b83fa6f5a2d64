from __future__ import annotations

import click

from dbguardian.backup.logical import run_backup
from dbguardian.cli.common import policy_from, run_async
from dbguardian.units import format_size


@click.command("backup")
@click.argument("target")
@click.option("--tier", default="manual", show_default=True, help="Catalog tier (a schedule name, or manual).")
@click.pass_context
def command(ctx: click.Context, target: str, tier: str) -> None:
    """Back up TARGET now; prints the new backup id as the last line."""
    policy = policy_from(ctx)
    manifest = run_async(lambda: run_backup(policy, target, tier))
    rows = sum(table.rows for table in manifest.tables)
    click.echo(
        f"backup {manifest.id} of {target} ({tier}): {format_size(manifest.raw_size_bytes)} dumped, "
        f"{format_size(manifest.size_bytes)} stored on {', '.join(manifest.storage)}, "
        f"{len(manifest.tables)} tables / {rows} rows, {manifest.duration_seconds:.1f}s"
    )
    click.echo(manifest.id)
