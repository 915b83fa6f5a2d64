from __future__ import annotations

import click

from dbguardian.archiving.ship import ship_spool
from dbguardian.backup.logical import run_backup
from dbguardian.backup.physical import run_physical_backup
from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import UsageError
from dbguardian.units import format_size


@click.command("backup")
@click.argument("target")
@click.option("--tier", default="manual", show_default=True, help="Catalog tier (a schedule name, or manual).")
@click.option(
    "--physical",
    is_flag=True,
    help="A base backup (pg_basebackup, needs the target's wal:) instead of pg_dump; a physical tier implies it.",
)
@click.pass_context
def command(ctx: click.Context, target: str, tier: str, physical: bool) -> None:
    """Back up TARGET now; prints the new backup id as the last line.

    The kind follows the tier (a schedule with ``kind: physical`` takes base backups); ``--physical``
    takes a manual base backup.
    """
    policy = policy_from(ctx)
    config = policy.target(target)
    kind = config.tier_kind(tier)
    if physical and kind != "physical":
        if tier in config.schedules:
            raise UsageError(
                f"tier {tier!r} of {target!r} takes logical backups; --physical needs a physical tier or manual"
            )
        kind = "physical"
    if kind == "physical":
        if config.wal is None:
            raise UsageError(f"target {target!r} has no 'wal:' block: a base backup is restorable only with its WAL archive")
        base = run_async(lambda: run_physical_backup(policy, target, tier, ship=ship_spool))
        click.echo(
            f"base backup {base.id} of {target} ({tier}): {format_size(base.raw_size_bytes)} read, "
            f"{format_size(base.size_bytes)} stored on {', '.join(base.storage)}, "
            f"WAL {base.start_lsn}..{base.stop_lsn} on timeline {base.timeline}, {base.duration_seconds:.1f}s"
        )
        click.echo(base.id)
        return
    manifest = run_async(lambda: run_backup(policy, target, tier))
    rows = sum(table.rows for table in manifest.tables)
    click.echo(
        f"backup {manifest.id} of {target} ({tier}): {format_size(manifest.raw_size_bytes)} dumped, "
        f"{format_size(manifest.size_bytes)} stored on {', '.join(manifest.storage)}, "
        f"{len(manifest.tables)} tables / {rows} rows, {manifest.duration_seconds:.1f}s"
    )
    click.echo(manifest.id)
