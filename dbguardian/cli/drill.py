from __future__ import annotations

import json

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import OperationError
from dbguardian.jobs.backup import target_config
from dbguardian.jobs.drill import read_history, run_drill


@click.command("drill")
@click.argument("target")
@click.option("--backup", "backup_id", help="Drill this backup id (default: per the target's drill.pick).")
@click.option("--json", "as_json", is_flag=True, help="Print the report (or the history) as JSON.")
@click.pass_context
def command(ctx: click.Context, target: str, backup_id: str | None, as_json: bool) -> None:
    """Restore a backup of TARGET into a scratch database and check it; `drill history` lists past drills."""
    policy = policy_from(ctx)
    if target == "history":
        entries = read_history(policy)
        if as_json:
            click.echo(json.dumps(entries, indent=2))
            return
        for entry in entries:
            verdict = "PASS" if entry.get("ok") else "FAIL"
            click.echo(
                f"{entry['started_at'][:19]}  {verdict}  {entry['target']:<12} {entry.get('backup_id') or '-':<30} "
                f"total {entry['timings'].get('total', 0):.1f}s  {entry.get('error') or ''}"
            )
        return
    target_config(policy, target)  # unknown target: a usage error naming the defined ones
    report = run_async(lambda: run_drill(policy, target, backup_id))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(
            f"drill of {target}: backup {report.backup_id} from {report.storage} into {report.database} ({report.mode})"
        )
        for check in report.checks:
            click.echo(f"  {'ok  ' if check.ok else 'FAIL'} {check.name:<24} {check.observed}")
        timings = ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in report.timings.items())
        click.echo(f"  timings: {timings}")
        if report.rto_target_seconds is not None:
            click.echo(f"  recovery time target {report.rto_target_seconds:g}s: {'met' if report.rto_ok else 'MISSED'}")
        click.echo(report.summary())
    if not report.ok:
        raise OperationError(report.summary())
