from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import UsageError
from dbguardian.units import format_size

if TYPE_CHECKING:
    from dbguardian.catalog import LogicalManifest
    from dbguardian.policy import Policy
    from dbguardian.postgres import ConnectionInfo
    from dbguardian.restore import SafetyBackup
    from dbguardian.restore.physical import PitrReport

# The logical restore's modules (backup, pg_restore, scratch) are imported in its branch: a PITR restore
# does not need them, and every tenth of a second counts against the recovery time it reports.


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
    "--file",
    "dump_file",
    type=click.Path(path_type=Path, exists=True),
    help="Restore a dump made outside dbguardian: plain SQL, pg_dump custom/tar/directory, gzip or zstd (by content).",
)
@click.option(
    "--before",
    metavar="TIME",
    help='The newest backup taken at or before TIME: ISO 8601, or "2026-01-15 12:00" in the policy\'s timezone.',
)
@click.option(
    "--dsn",
    metavar="URL",
    help="Restore onto this server instead of the target's (postgresql://user@host:port/db; no password in it).",
)
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --dsn: file holding the password (default: $PGPASSWORD, then ~/.pgpass).",
)
@click.option(
    "--identity",
    type=click.Path(path_type=Path, dir_okay=False),
    help="age identity or GPG secret key file for encrypted backups (default: $DBGUARDIAN_IDENTITY_FILE).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--pitr", is_flag=True, help="Point-in-time recovery: a base backup + archived WAL into --pgdata.")
@click.option("--pgdata", type=click.Path(path_type=Path, file_okay=False), help="With --pitr: the empty data directory.")
@click.option("--to-time", help="With --pitr: recover to this ISO 8601 time; a zone is required (Z or +HH:MM).")
@click.option("--to-name", help="With --pitr: recover to this restore point (dbguardian restore-point).")
@click.option("--to-lsn", help="With --pitr: recover to this LSN (e.g. 0/3000060).")
@click.option("--to-latest", is_flag=True, help="With --pitr: replay all archived WAL (the default).")
@click.option("--start", is_flag=True, help="With --pitr: start the server and wait until it is promoted.")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="With --pitr: port of the restored server (default: a free one)."
)
@click.option("--keep-archiving", is_flag=True, help="With --pitr: keep archive_mode of the source (off by default).")
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
    dump_file: Path | None,
    before: str | None,
    dsn: str | None,
    password_file: Path | None,
    identity: Path | None,
    as_json: bool,
    pitr: bool,
    pgdata: Path | None,
    to_time: str | None,
    to_name: str | None,
    to_lsn: str | None,
    to_latest: bool,
    start: bool,
    port: int | None,
    keep_archiving: bool,
) -> None:
    """Restore a backup of TARGET (the latest by default) into a database, or validate it.

    With --pitr: extract a base backup into the empty --pgdata and set it up to replay archived WAL up to
    --to-time / --to-name / --to-lsn (or all of it), then promote; --start also starts it and waits.
    """
    policy = policy_from(ctx)
    pitr_only = {"--pgdata": pgdata, "--to-time": to_time, "--to-name": to_name, "--to-lsn": to_lsn,
                 "--to-latest": to_latest or None, "--start": start or None, "--port": port,
                 "--keep-archiving": keep_archiving or None}  # fmt: skip
    if pitr:
        if used := [
            flag for flag, value in {"--before": before, "--dsn": dsn, "--password-file": password_file}.items() if value
        ]:
            raise UsageError(f"{', '.join(used)} do not go with --pitr (use --to-time for a moment in the WAL)")
        _restore_pitr(ctx, target, backup_id, pgdata, to_time, to_name, to_lsn, to_latest, start, port, identity,
                      keep_archiving, as_json)  # fmt: skip
        return
    if used := [flag for flag, value in pitr_only.items() if value is not None]:
        raise UsageError(f"{', '.join(used)} only go with --pitr")
    if password_file is not None and dsn is None:
        raise UsageError("--password-file goes with --dsn (the target's own password is the policy's)")
    if dump_file is not None:
        catalog_only = {"BACKUP_ID": None if backup_id == "latest" else backup_id, "--before": before,
                        "--from": from_storage, "--identity": identity, "--pitr": pitr or None}  # fmt: skip
        if used := [flag for flag, value in catalog_only.items() if value is not None]:
            raise UsageError(f"--file restores that file; {', '.join(used)} choose a backup from the catalog instead")
        _restore_file(ctx, target, dump_file, into, validate_only, force, jobs, no_owner, dsn, password_file, as_json)
        return
    moment = None
    if before is not None:
        from dbguardian.units import parse_moment

        try:
            moment = parse_moment(before, policy.timezone)
        except ValueError as error:
            raise UsageError(f"--before: {error}") from None
    if validate_only:
        from dbguardian.restore import validate

        if dsn is not None:
            raise UsageError("--validate-only touches no database; --dsn does not go with it")
        report = run_async(lambda: validate(policy, target, backup_id, from_storage, identity, before=moment))
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

    from dbguardian.restore import restore

    server, safety_backup = _destination(policy, target, dsn, password_file)

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
            before=moment,
            server=server,
        )
    )
    if as_json:
        click.echo(json.dumps(result.__dict__))
        return
    _print_safety(target, into, result.safety_backup_id)
    click.echo(
        f"restored backup {result.backup_id} of {target} from {result.storage} into {result.server} "
        f"({result.mode}, {result.seconds:.1f}s): {result.tables} tables, {result.rows} rows, "
        "row counts match the manifest"
    )


def _restore_pitr(
    ctx: click.Context,
    target: str,
    backup_id: str,
    pgdata: Path | None,
    to_time: str | None,
    to_name: str | None,
    to_lsn: str | None,
    to_latest: bool,
    start: bool,
    port: int | None,
    identity: Path | None,
    keep_archiving: bool,
    as_json: bool,
) -> None:
    from dbguardian.restore.physical import finish_pitr, make_target, prepare_pitr

    if pgdata is None:
        raise UsageError("restore --pitr needs --pgdata DIR (an empty directory)")
    recovery_target = make_target(to_time=to_time, to_name=to_name, to_lsn=to_lsn, to_latest=to_latest)
    policy = policy_from(ctx)
    policy_path: Path = ctx.obj["policy_path"]

    async def restore() -> PitrReport:
        plan = await prepare_pitr(
            policy,
            target,
            pgdata,
            backup_ref=backup_id,
            target=recovery_target,
            identity=identity,
            port=port,
            keep_archiving=keep_archiving,
            policy_path=policy_path,
        )
        return await finish_pitr(plan, start=start)

    report = run_async(restore)
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    goal = recovery_target.kind if recovery_target.value is None else f"{recovery_target.kind} {recovery_target.value}"
    if report.started:
        click.echo(
            f"restored base backup {report.backup_id} of {target} into {report.pgdata} and recovered to {goal}: "
            f"reached LSN {report.reached_lsn}, last transaction at {report.reached_time or 'unknown'}, "
            f"timeline {report.timeline}; server promoted, listening on port {report.port} ({report.seconds:.1f}s)"
        )
        return
    click.echo(
        f"extracted base backup {report.backup_id} of {target} into {report.pgdata}, recovery to {goal} set up "
        f"(port {report.port}, socket directory {report.socket_dir}). Next, start it as the data directory's "
        f"owner; it replays the WAL, stops at the target and is promoted:\n  {report.start_command}"
    )


def _restore_file(
    ctx: click.Context,
    target: str,
    dump_file: Path,
    into: str | None,
    validate_only: bool,
    force: bool,
    jobs: int,
    no_owner: bool,
    dsn: str | None,
    password_file: Path | None,
    as_json: bool,
) -> None:
    from dbguardian.restore.external import restore_file, validate_file

    policy = policy_from(ctx)
    policy.target(target)
    if validate_only:
        if dsn is not None:
            raise UsageError("--validate-only touches no database; --dsn does not go with it")
        checked = run_async(lambda: validate_file(policy, dump_file))
        if as_json:
            click.echo(json.dumps(checked.__dict__))
            return
        entries = "" if checked.toc_entries is None else f", {checked.toc_entries} archive entries"
        click.echo(
            f"{dump_file} is a readable {checked.format}: {format_size(checked.raw_bytes)} "
            f"decompressed{entries} ({checked.seconds:.1f}s); {checked.checked}"
        )
        return
    if not into:
        raise UsageError("restore --file needs --into DBNAME (or --validate-only)")
    server, safety_backup = _destination(policy, target, dsn, password_file)

    result = run_async(
        lambda: restore_file(
            policy,
            target,
            dump_file,
            into,
            force=force,
            jobs=jobs,
            no_owner=no_owner,
            server=server,
            safety_backup=safety_backup,
        )
    )
    if as_json:
        click.echo(json.dumps(result.__dict__))
        return
    _print_safety(target, into, result.safety_backup_id)
    click.echo(
        f"restored {dump_file} ({result.format}) into {result.server} ({result.mode}, {result.seconds:.1f}s); "
        f"{result.checked}"
    )


def _destination(
    policy: Policy, target: str, dsn: str | None, password_file: Path | None
) -> tuple[ConnectionInfo | None, SafetyBackup]:
    """Where a restore goes (``--dsn``'s server, else None: the target's) and how it backs up a database it replaces."""
    from dbguardian.backup.logical import backup_database
    from dbguardian.catalog import SAFETY_TIER
    from dbguardian.postgres import connection_info_from_dsn

    server = None if dsn is None else connection_info_from_dsn(dsn, password_file)

    async def safety_backup(database: ConnectionInfo) -> LogicalManifest:
        return await backup_database(policy, target, SAFETY_TIER, database)

    return server, safety_backup


def _print_safety(target: str, into: str, safety_backup_id: str | None) -> None:
    if safety_backup_id:
        click.echo(
            f"safety backup of the previous {into!r}: {safety_backup_id} "
            f"(undo: dbguardian restore {target} {safety_backup_id} --into {into} --force)"
        )
