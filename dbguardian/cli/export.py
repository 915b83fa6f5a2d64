"""``dbguardian export``: download, verify, decrypt and decompress a backup to a local file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.restore.export import STDOUT, ExportFormat, export_backup
from dbguardian.units import format_size


@click.command("export")
@click.argument("target")
@click.argument("backup_id", default="latest", metavar="[BACKUP_ID|latest]")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True), required=True,
    help="The file to write (created 0600; replaced only once the checksum matched); - for stdout.",
)  # fmt: skip
@click.option(
    "--format", "export_format", type=click.Choice(["custom", "plain"]), default="custom", show_default=True,
    help="custom: the pg_dump archive (pg_restore reads it); plain: its SQL script (psql reads it).",
)  # fmt: skip
@click.option(
    "--identity",
    type=click.Path(path_type=Path, dir_okay=False),
    help="age identity or GPG secret key file for encrypted backups (default: $DBGUARDIAN_IDENTITY_FILE).",
)
@click.option("--from", "from_storage", help="Storage to read from (default: the first that has the backup).")
@click.option(
    "--globals", "globals_only", is_flag=True, help="The roles and tablespaces (SQL for psql) instead of the dump."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (on stderr when -o -).")
@click.pass_context
def command(
    ctx: click.Context,
    target: str,
    backup_id: str,
    output: Path,
    export_format: str,
    identity: Path | None,
    from_storage: str | None,
    globals_only: bool,
    as_json: bool,
) -> None:
    """Write a backup of TARGET (the latest by default) to a local file, checked and readable without dbguardian."""
    policy = policy_from(ctx)
    policy.target(target)
    fmt: ExportFormat = "plain" if export_format == "plain" else "custom"
    report = run_async(
        lambda: export_backup(
            policy,
            target,
            backup_id,
            output,
            export_format=fmt,
            identity=identity,
            from_storage=from_storage,
            globals_only=globals_only,
        )
    )
    to_stderr = output == STDOUT
    if as_json:
        click.echo(json.dumps(report.__dict__), err=to_stderr)
        return
    click.echo(
        f"exported backup {report.backup_id} of {target} from {report.storage} to {report.output} "
        f"({report.format}, {format_size(report.bytes)}, sha256 verified, {report.seconds:.1f}s)",
        err=to_stderr,
    )
