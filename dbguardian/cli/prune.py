from __future__ import annotations

import json

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import OperationError
from dbguardian.jobs.prune import prune


@click.command("prune")
@click.argument("target", required=False)
@click.option("--dry-run", is_flag=True, help="Show what retention would delete; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print every decision as JSON.")
@click.pass_context
def command(ctx: click.Context, target: str | None, dry_run: bool, as_json: bool) -> None:
    """Apply retention (per tier keep, max_age, min_keep, per storage) and remove leftovers of failed runs."""
    policy = policy_from(ctx)
    if target is not None:
        policy.target(target)  # unknown target: a usage error naming the defined ones
    result = run_async(lambda: prune(policy, target, dry_run=dry_run))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "decisions": [decision.__dict__ for decision in result.decisions],
                    "deleted": [{"storage": s, "id": i} for s, i in result.deleted],
                    "leftovers_removed": result.leftovers,
                    "aborted_uploads": result.aborted_uploads,
                    "errors": result.errors,
                    "wal": [
                        {"storage": storage, "first": item.first, "last": item.last, "segments": item.count}
                        for storage, item in result.wal_ranges
                    ],
                    "wal_deleted": result.wal_deleted,
                },
                indent=2,
            )
        )
    else:
        for decision in result.decisions:
            verb = ("would delete" if dry_run else "deleted") if decision.delete else "keep"
            click.echo(f"{verb:<13} {decision.storage:<10} {decision.backup_id}  {decision.tier:<8} {decision.reason}")
        for storage, item in result.wal_ranges:
            verb = "would delete" if dry_run else "deleted"
            click.echo(f"{verb:<13} {storage:<10} WAL {item.first} .. {item.last} ({item.count} segment(s))")
        deletions = sum(decision.delete for decision in result.decisions)
        click.echo(
            f"{deletions} backup(s) {'would be ' if dry_run else ''}deleted, "
            f"{len(result.decisions) - deletions} kept; {len(result.leftovers)} leftover object(s) removed, "
            f"{len(result.aborted_uploads)} stale upload(s) aborted"
        )
    if result.errors:
        raise OperationError("prune failed on: " + "; ".join(result.errors))
