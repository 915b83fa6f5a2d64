from __future__ import annotations

import json

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import OperationError
from dbguardian.jobs.verify import verify


@click.command("verify")
@click.argument("target")
@click.argument("backup_id", default="latest", metavar="[BACKUP_ID|latest]")
@click.option("--all", "every", is_flag=True, help="Verify every backup of the target.")
@click.option("--json", "as_json", is_flag=True, help="Print every object checked as JSON.")
@click.pass_context
def command(ctx: click.Context, target: str, backup_id: str, every: bool, as_json: bool) -> None:
    """Re-read stored objects and compare size and sha256 with the manifest (no restore)."""
    policy = policy_from(ctx)
    policy.target(target)  # unknown target: a usage error naming the defined ones
    results = run_async(lambda: verify(policy, target, backup_id, every=every))
    if as_json:
        click.echo(json.dumps([result.__dict__ for result in results], indent=2))
    else:
        for result in results:
            mark = "ok  " if result.ok else "FAIL"
            click.echo(f"{mark} {result.storage}:{result.key}" + ("" if result.ok else f"  {result.error}"))
    failed = [result for result in results if not result.ok]
    if failed:
        raise OperationError(
            f"{len(failed)} of {len(results)} object(s) failed verification: "
            + ", ".join(f"{result.storage}:{result.key}" for result in failed)
        )
    if not as_json:
        click.echo(f"{len(results)} object(s) verified")
