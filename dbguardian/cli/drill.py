"""``dbguardian drill``: run a restore drill now, or list past drills (``--history``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import OperationError, UsageError
from dbguardian.jobs.drill import DrillReport, read_history, run_drill
from dbguardian.postgres import connection_info_from_dsn

# `drill history` lists past drills, unless the policy has a target of that name (then it drills it).
HISTORY_WORD = "history"


@click.command("drill")
@click.argument("target", required=False)
@click.option("--history", "history", is_flag=True, help="List past drills (of TARGET only, when given).")
@click.option("--backup", "backup_id", help="Drill this backup id (default: per the target's drill.pick).")
@click.option("--json", "as_json", is_flag=True, help="Print the report (or the history) as JSON.")
@click.option("--dsn", metavar="URL", help="Drill on this server (postgresql://user@host:port/db; no password in it).")
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --dsn: file holding the password (default: $PGPASSWORD, then ~/.pgpass).",
)
@click.pass_context
def command(
    ctx: click.Context,
    target: str | None,
    history: bool,
    backup_id: str | None,
    as_json: bool,
    dsn: str | None,
    password_file: Path | None,
) -> None:
    """Restore a backup of TARGET into a scratch database and check it; `drill --history [TARGET]` lists past drills."""
    policy = policy_from(ctx)
    if not history and target == HISTORY_WORD and HISTORY_WORD not in policy.targets:
        history, target = True, None
    if history:
        _print_history(read_history(policy, target), as_json)
        return
    if target is None:
        raise UsageError("drill needs a TARGET (or --history)")
    policy.target(target)  # unknown target: a usage error naming the defined ones
    if password_file is not None and dsn is None:
        raise UsageError("--password-file goes with --dsn")
    server = None if dsn is None else connection_info_from_dsn(dsn, password_file)
    report = run_async(lambda: run_drill(policy, target, backup_id, server=server))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise OperationError(report.summary())


def _print_history(entries: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for entry in entries:
        verdict = "PASS" if entry.get("ok") else "FAIL"
        click.echo(
            f"{entry['started_at'][:19]}  {verdict}  {entry['target']:<12} {entry.get('backup_id') or '-':<30} "
            f"total {entry['timings'].get('total', 0):.1f}s  {entry.get('error') or ''}"
        )


def _print_report(report: DrillReport) -> None:
    if report.kind == "pitr":
        recovery = report.recovery
        point = f"{recovery.get('restore_point')} at {recovery.get('restore_point_lsn')}"
        click.echo(f"point-in-time drill of {report.target}: base backup {report.backup_id} + WAL to restore point {point}")
        if report.rpo_seconds is not None:
            click.echo(f"  recovery point: archived on every storage {report.rpo_seconds:.2f}s after it was made")
    else:
        where = f"from {report.storage} into {report.database} ({report.mode})"
        click.echo(f"drill of {report.target}: backup {report.backup_id} {where}")
    for check in report.checks:
        click.echo(f"  {'ok  ' if check.ok else 'FAIL'} {check.name:<24} {check.observed}")
    timings = ", ".join(f"{phase} {seconds:.2f}s" for phase, seconds in report.timings.items())
    click.echo(f"  timings: {timings}")
    if report.rto_target_seconds is not None:
        click.echo(f"  recovery time target {report.rto_target_seconds:g}s: {'met' if report.rto_ok else 'MISSED'}")
    click.echo(report.summary())
