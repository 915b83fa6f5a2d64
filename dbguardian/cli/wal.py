"""`dbguardian wal setup` and `dbguardian wal status`: the WAL archive's configuration and state."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from dbguardian.archiving.setup import Advice, advise, server_settings, wal_push_command
from dbguardian.archiving.status import WalStatus, wal_status
from dbguardian.cli import DEFAULT_POLICY_PATH
from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import UsageError
from dbguardian.policy import Policy
from dbguardian.postgres import INCREMENTAL_BACKUP_MAJOR, connected, connection_info, server_major
from dbguardian.selfexec import dbguardian_executable
from dbguardian.units import format_duration, format_size


@click.group("wal")
def command() -> None:
    """Continuous WAL archiving: server settings and archive state."""


def _wal_targets(policy: Policy) -> list[str]:
    return sorted(name for name, target in policy.targets.items() if target.wal is not None)


@command.command("setup")
@click.argument("target")
@click.pass_context
def setup(ctx: click.Context, target: str) -> None:
    """Print the postgresql.conf lines TARGET's server needs to archive WAL
    into the spool; exit 0 when it already matches, 1 (with what is missing) when not."""
    policy = policy_from(ctx.find_root())
    config = policy.target(target)
    if config.wal is None:
        raise UsageError(f"target {target!r} has no 'wal:' block; add one (spool, rpo_target) first")
    wal = config.wal
    policy_path: Path = ctx.find_root().obj["policy_path"]
    several = len(_wal_targets(policy)) > 1

    async def read() -> dict[str, str | None]:
        async with connected(connection_info(config)) as connection:
            return await server_settings(connection)

    settings = run_async(read)
    named_policy = None if policy_path == DEFAULT_POLICY_PATH else policy_path.resolve()
    push = wal_push_command(named_policy, target if several else None, dbguardian_executable())
    incremental = any(config.tier_incremental(tier) for tier in config.physical_tiers())
    advice = advise(settings, wal.spool, wal.rpo_target, wal_push=push, incremental=incremental)
    missing: list[Advice] = [item for item in advice if not item.ok]
    click.echo(f"# postgresql.conf for target {target} (WAL into the spool {wal.spool})")
    for item in advice:
        click.echo(item.line)
    click.echo("")
    click.echo("# The spool must exist, be writable by the server's OS user and readable by dbguardian:")
    click.echo(f"#   install -d -m 0770 -o postgres -g postgres {wal.spool}")
    if not missing:
        click.echo(f"ok: the server archives WAL into {wal.spool} as the policy expects")
        ctx.exit(0)
    for item in missing:
        current = "not set" if item.current in (None, "") else repr(item.current)
        click.echo(f"missing: {item.line} (now {current}; {item.why})", err=True)
    if incremental and server_major(int(settings.get("server_version_num") or 0)) < INCREMENTAL_BACKUP_MAJOR:
        click.echo(f"note: incremental tiers take full base backups before PostgreSQL {INCREMENTAL_BACKUP_MAJOR}", err=True)
    if any(item.setting in ("archive_mode", "wal_level") for item in missing):
        click.echo("then restart the server (archive_mode and wal_level need a restart); the rest needs a reload",
                   err=True)  # fmt: skip
    else:
        click.echo("then reload the server: SELECT pg_reload_conf()", err=True)
    ctx.exit(1)


def _print_status(status: WalStatus) -> None:
    facts = status.facts
    click.echo(f"target {status.target}")
    stats = facts.archiver
    if stats is None:
        click.echo(f"  archiver   unknown: {status.database_error}")
    else:
        click.echo(f"  archiver   {stats.archived_count} archived, last {stats.last_archived_wal or '-'}"
                   f" at {_when(stats.last_archived_time)}; {stats.failed_count} failed, last"
                   f" {stats.last_failed_wal or '-'} at {_when(stats.last_failed_time)}")  # fmt: skip
        click.echo(f"  current    {status.current_segment or '-'} (being written)")
    spool = facts.spool
    click.echo(f"  spool      {spool.files} file(s), {format_size(spool.bytes)}"
               + (f", oldest {spool.oldest_name} from {_when(spool.oldest_at)}" if spool.oldest_name else ""))  # fmt: skip
    for name, storage in sorted(facts.storages.items()):
        if storage.error:
            click.echo(f"  storage    {name}: unreachable: {storage.error}")
            continue
        gaps = f"{storage.gap_count} gap(s): {', '.join(storage.gaps)}" if storage.gap_count else "no gaps"
        click.echo(f"  storage    {name}: newest {storage.newest_segment or '-'} at {_when(storage.newest_at)}, {gaps}")
    click.echo(f"  rpo        {'-' if status.rpo is None else format_duration(status.rpo)}")
    for verdict in status.verdicts:
        mark = "OK  " if verdict.ok else "FAIL"
        click.echo(f"  {mark} {verdict.check:<17} {verdict.observed}")


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@command.command("status")
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, target: str | None, as_json: bool) -> None:
    """The archive of TARGET (or every target with wal:): pg_stat_archiver, the spool, the newest
    segment on each storage, gaps, the current RPO. Exit 0 when every WAL check passes, 1 when not."""
    policy = policy_from(ctx.find_root())
    if target is not None:
        if policy.target(target).wal is None:
            raise UsageError(f"target {target!r} has no 'wal:' block: WAL is not archived")
        names = [target]
    else:
        names = _wal_targets(policy)
        if not names:
            raise UsageError("no target has a 'wal:' block: WAL is not archived")
    now = datetime.now(UTC)

    async def gather() -> list[WalStatus]:
        return [await wal_status(policy, name, now) for name in names]

    statuses = run_async(gather)
    healthy = all(v.ok for s in statuses for v in s.verdicts)
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "targets": [s.to_json() for s in statuses]}, indent=2))
    else:
        for item in statuses:
            _print_status(item)
    ctx.exit(0 if healthy else 1)
