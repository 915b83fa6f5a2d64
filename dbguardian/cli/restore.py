from __future__ import annotations

import json
from pathlib import Path

import click

from dbguardian.backup.logical import backup_database
from dbguardian.catalog import SAFETY_TIER, LogicalManifest
from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import UsageError
from dbguardian.postgres import ConnectionInfo
from dbguardian.restore import restore, validate
from dbguardian.units import format_size


@click.command("restore")
@click.argument("target")
@click.argument("backup_id", default="latest", metavar="[BACKUP_ID|latest]")
@click.option("--into", "into", help="Database to restore into (created; see --force).")
@click.option("--force", is_flag=True, help="Replace an existing database, after taking a safety backup of it.")
@click.option("--validate-only", is_flag=True, help="Read, checksum, decompress and list; touch no database.")
@click.option(
    "--jobs",
    "-j",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Parallel pg_restore jobs (>1 spools the archive to state_dir/tmp first).",
)
@click.option("--no-owner", is_flag=True, help="Do not restore object ownership (roles missing on this server).")
@click.option("--from", "from_storage", help="Storage to read from (default: the first that has the backup).")
@click.option(
    "--identity",
    type=click.Path(path_type=Path, dir_okay=False),
    help="age identity or GPG secret key file for encrypted backups (default: $DBGUARDIAN_IDENTITY_FILE).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(
    ctx: click.Context,
    target: str,
    backup_id: str,
    into: str | None,
    force: bool,
    validate_only: bool,
    jobs: int,
    no_owner: bool,
    from_storage: str | None,
    identity: Path | None,
    as_json: bool,
) -> None:
    """Restore a backup of TARGET (the latest by default) into a database, or validate it."""
    policy = policy_from(ctx)
    if validate_only:
        report = run_async(lambda: validate(policy, target, backup_id, from_storage, identity))
        if as_json:
            click.echo(json.dumps({k: v for k, v in report.__dict__.items() if k != "toc"}))
            return
        contents = (
            "contents not checked: encrypted, no --identity given"
            if report.toc_entries is None
            else f"{report.toc_entries} archive entries"
        )
        click.echo(
            f"backup {report.backup_id} of {target} on {report.storage} is valid: sha256 matches, "
            f"{format_size(report.stored_bytes)} stored / {format_size(report.raw_bytes)} raw, "
            f"{contents} ({report.seconds:.1f}s)"
        )
        return
    if not into:
        raise UsageError("restore needs --into DBNAME (or --validate-only)")

    async def safety_backup(database: ConnectionInfo) -> LogicalManifest:
        return await backup_database(policy, target, SAFETY_TIER, database)

    result = run_async(
        lambda: restore(
            policy,
            target,
            backup_id,
            into,
            force=force,
            jobs=jobs,
            no_owner=no_owner,
            from_storage=from_storage,
            identity=identity,
            safety_backup=safety_backup,
        )
    )
    if as_json:
        click.echo(json.dumps(result.__dict__))
        return
    if result.safety_backup_id:
        click.echo(
            f"safety backup of the previous {into!r}: {result.safety_backup_id} "
            f"(undo: dbguardian restore {target} {result.safety_backup_id} --into {into} --force)"
        )
    click.echo(
        f"restored backup {result.backup_id} of {target} from {result.storage} into {into!r} "
        f"({result.mode}, {result.seconds:.1f}s): {result.tables} tables, {result.rows} rows, "
        "row counts match the manifest"
    )
