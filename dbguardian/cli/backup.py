"""``dbguardian backup``: each branch imports the routine it runs, as its start-up is part of the backup's time
(issue 14). A logical backup does not load the base backup's driver and the WAL shipper pass it needs
(:mod:`dbguardian.backup.physical`, :mod:`dbguardian.archiving.ship`), nor the daemon's pieces a schedule
tier runs (:mod:`dbguardian.oneshot`); tests/unit/test_startup_imports.py checks it."""

from __future__ import annotations

import click

from dbguardian.catalog.manifest import AnyManifest, PhysicalManifest
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
@click.option("--no-prune", is_flag=True, help="A schedule tier's run prunes the target after a success; not with this.")
@click.pass_context
def command(ctx: click.Context, target: str, tier: str, physical: bool, no_prune: bool) -> None:
    """Back up TARGET now; prints the new backup id as the last line.

    The kind follows the tier (a schedule with ``kind: physical`` takes base backups); ``--physical``
    takes a manual base backup. A schedule tier (``--tier daily`` from cron) is run as the daemon runs
    it: the target's pings, then prune after a success (unless ``--no-prune``), then the health checks
    with their alerts (docs/guides/cron.md). The exit status is the backup's: trouble after a good
    backup (a ping, prune or alert that failed) is reported on stderr and exits 0.
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
    if kind == "physical" and config.wal is None:
        raise UsageError(f"target {target!r} has no 'wal:' block: a base backup is restorable only with its WAL archive")
    if tier in config.schedules:
        from dbguardian.oneshot import scheduled_backup  # the alert channels and the daemon's pieces: only for cron runs

        run = run_async(lambda: scheduled_backup(policy, target, tier, prune=not no_prune))
        for problem in run.problems:
            click.echo(f"warning: {problem}", err=True)
        if run.error is not None:
            raise run.error  # a DbguardianError: one line, exit 1; anything else: a bug, with its traceback
        assert run.manifest is not None
        _report(run.manifest, target, tier)
        click.echo(run.manifest.id)
        return
    manifest: AnyManifest
    if kind == "physical":
        from dbguardian.archiving.ship import ship_spool
        from dbguardian.backup.physical import run_physical_backup

        manifest = run_async(lambda: run_physical_backup(policy, target, tier, ship=ship_spool))
    else:
        from dbguardian.backup.logical import run_backup

        manifest = run_async(lambda: run_backup(policy, target, tier))
    _report(manifest, target, tier)
    click.echo(manifest.id)


def _report(manifest: AnyManifest, target: str, tier: str) -> None:
    """The summary line (the id follows it as the last line)."""
    if isinstance(manifest, PhysicalManifest):
        click.echo(
            f"base backup {manifest.id} of {target} ({tier}): {format_size(manifest.raw_size_bytes)} read, "
            f"{format_size(manifest.size_bytes)} stored on {', '.join(manifest.storage)}, "
            f"WAL {manifest.start_lsn}..{manifest.stop_lsn} on timeline {manifest.timeline}, "
            f"{manifest.duration_seconds:.1f}s"
        )
        return
    rows = sum(table.rows for table in manifest.tables)
    click.echo(
        f"backup {manifest.id} of {target} ({tier}): {format_size(manifest.raw_size_bytes)} dumped, "
        f"{format_size(manifest.size_bytes)} stored on {', '.join(manifest.storage)}, "
        f"{len(manifest.tables)} tables / {rows} rows, {manifest.duration_seconds:.1f}s"
    )
