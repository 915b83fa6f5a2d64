from __future__ import annotations

import json

import click

from dbguardian.catalog.manifest import PhysicalManifest
from dbguardian.catalog.service import AnyBackup, Catalog
from dbguardian.cli.common import policy_from, run_async
from dbguardian.storage import open_storage
from dbguardian.units import format_size


@click.command("list")
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, newest first.")
@click.pass_context
def command(ctx: click.Context, target: str | None, as_json: bool) -> None:
    """List committed backups (of TARGET, or of every target), newest first."""
    policy = policy_from(ctx)
    if target is not None:
        policy.target(target)  # unknown target: a usage error naming the defined ones
    names = (
        sorted({name for t in policy.targets.values() for name in t.storage})
        if target is None
        else policy.targets[target].storage
    )
    storages = [open_storage(name, policy.storage[name]) for name in names]
    targets = [target] if target else sorted(policy.targets)
    records = [record for record in run_async(lambda: Catalog(storages).backups(target)) if record.target in targets]
    if as_json:
        click.echo(json.dumps([record_json(record) for record in records], indent=2))
        return
    if not records:
        click.echo("no backups")
        return
    click.echo(
        f"{'ID':<28} {'TARGET':<12} {'TIER':<8} {'KIND':<8} {'FINISHED (UTC)':<20} {'STORED':>10} {'RAW':>10}  STORAGE"
    )
    for record in records:
        manifest = record.manifest
        based_on = ""
        if isinstance(manifest, PhysicalManifest) and manifest.incremental_of is not None:
            based_on = f"  (incremental of {manifest.incremental_of}, chain of {len(manifest.chain) + 1})"
        click.echo(
            f"{manifest.id:<28} {manifest.target:<12} {manifest.tier:<8} {manifest.kind:<8} "
            f"{manifest.finished_at.strftime('%Y-%m-%d %H:%M:%S'):<20} {format_size(manifest.size_bytes):>10} "
            f"{format_size(manifest.raw_size_bytes):>10}  {','.join(record.storages)}{based_on}"
        )


def record_json(record: AnyBackup) -> dict[str, object]:
    """The catalog's JSON of a backup; for a base backup also the WAL range it spans."""
    data = record.to_json()
    data["kind"] = record.manifest.kind
    if isinstance(record.manifest, PhysicalManifest):
        data["start_lsn"] = record.manifest.start_lsn
        data["stop_lsn"] = record.manifest.stop_lsn
        data["timeline"] = record.manifest.timeline
        data["incremental_of"] = record.manifest.incremental_of
        data["chain"] = record.manifest.chain
    return data
