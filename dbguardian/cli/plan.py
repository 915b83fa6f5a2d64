from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from dbguardian.cli.common import policy_from
from dbguardian.errors import DbguardianError
from dbguardian.jobs.backup import newest_backups
from dbguardian.jobs.prune import prune
from dbguardian.jobs.registry import job_specs
from dbguardian.schedule import catch_up_plan, next_runs


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@click.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--count", default=3, show_default=True, type=click.IntRange(1, 100), help="Next runs per job.")
@click.option("--at", "at", help="Compute as if now were this ISO 8601 time (default: now).")
@click.pass_context
def command(ctx: click.Context, as_json: bool, count: int, at: str | None) -> None:
    """Show the job table: each job's next runs (policy time zone and UTC) and what catch-up would run now."""
    policy = policy_from(ctx)
    now = datetime.fromisoformat(at).astimezone(UTC) if at else datetime.now(UTC)
    zone = ZoneInfo(policy.timezone)
    specs = job_specs(policy)
    catalog_error = None
    try:
        newest = asyncio.run(newest_backups(policy))
    except DbguardianError as error:
        newest, catalog_error = {}, str(error)
    catch_up = {item.spec.id: item for item in catch_up_plan(specs, newest, now)} if policy.catch_up else {}
    retention = asyncio.run(prune(policy, dry_run=True, now=now))
    deletions = [
        {"target": d.target, "storage": d.storage, "id": d.backup_id, "tier": d.tier, "reason": d.reason}
        for d in retention.decisions
        if d.delete
    ]
    # Backups that only the chain of a kept incremental keeps: what retention would otherwise delete.
    chains = [
        {"target": d.target, "storage": d.storage, "id": d.backup_id, "tier": d.tier, "reason": d.reason}
        for d in retention.decisions
        if d.kept_for is not None
    ]
    jobs: list[dict[str, Any]] = []
    for spec in specs:
        runs = next_runs(spec, now, count) if spec.cron is not None or spec.every is not None else []  # continuous: none
        newest_backup = newest.get((spec.target, spec.tier))
        jobs.append(
            {
                "job": spec.id,
                "kind": spec.kind,
                "target": spec.target,
                "tier": spec.tier,
                "trigger": spec.describe_trigger(),
                "incremental": spec.kind == "backup" and policy.target(spec.target).tier_incremental(spec.tier),
                "next_runs": [{"local": run.astimezone(zone).isoformat(), "utc": _iso(run)} for run in runs],
                "newest_backup": _iso(newest_backup) if newest_backup else None,
                "catch_up": catch_up[spec.id].reason if spec.id in catch_up else None,
            }
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "now": _iso(now),
                    "timezone": policy.timezone,
                    "catalog_error": catalog_error,
                    "jobs": jobs,
                    "retention_would_delete": deletions,
                    "retention_keeps_for_chains": chains,
                    "retention_errors": retention.errors,
                    "wal_retention_would_delete": [
                        {"storage": storage, "first": wal.first, "last": wal.last, "segments": wal.count}
                        for storage, wal in retention.wal_ranges
                    ],
                },
                indent=2,
            )
        )
        return
    click.echo(f"job table at {_iso(now)} (times in {policy.timezone}, UTC in brackets)")
    for job in jobs:
        click.echo(f"{job['job']}  {job['trigger']}" + ("  (incremental base backups)" if job["incremental"] else ""))
        for run in job["next_runs"]:
            click.echo(f"    next {run['local']}  [{run['utc']}]")
        if job["catch_up"]:
            click.echo(f"    catch-up now: {job['catch_up']}")
    if catalog_error:
        click.echo(f"catalog unreadable, catch-up unknown: {catalog_error}")
    click.echo(f"retention would delete now: {len(deletions) or 'nothing'}")
    for item in deletions:
        click.echo(f"    {item['storage']}:{item['target']}/{item['id']}  {item['tier']}  {item['reason']}")
    for storage, wal_range in retention.wal_ranges:
        click.echo(f"    {storage}: WAL {wal_range.first} .. {wal_range.last} ({wal_range.count} segment(s))")
    if chains:
        click.echo(f"retention keeps for incremental chains: {len(chains)}")
    for item in chains:
        click.echo(f"    {item['storage']}:{item['target']}/{item['id']}  {item['tier']}  {item['reason']}")
    for problem in retention.errors:
        click.echo(f"retention unknown: {problem}")
