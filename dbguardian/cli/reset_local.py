"""`dbguardian reset-local`: drop and rebuild a local database from a schema file or a backup, then seed it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import UsageError


@click.command("reset-local")
@click.option("--dsn", required=True, metavar="URL", help="The local database (postgresql://me@localhost/app_dev).")
@click.option(
    "--password-file", type=click.Path(path_type=Path, dir_okay=False), help="Its password (default: $PGPASSWORD)."
)
@click.option("--schema", "schema_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Load this schema file (e.g. a `schema dump`).")  # fmt: skip
@click.option("--from", "from_target", metavar="TARGET", help="Restore TARGET's backup instead (see --backup).")
@click.option("--backup", "backup_ref", default="latest", show_default=True, help="With --from: the backup id.")
@click.option("--anonymize", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="With --from: SQL run on the restored data before anyone can connect to it.")  # fmt: skip
@click.option("--seed", "seeds", multiple=True, metavar="PROFILE|FILE", help="Seed profile (policy seed.profiles) or file.")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False), help="Key for an encrypted backup.")
@click.option("--yes", is_flag=True, help="Do not ask (needed when not on a terminal).")
@click.option("--i-know-this-is-not-local", "not_local", is_flag=True, help="Allow a server that is not this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(
    ctx: click.Context,
    dsn: str,
    password_file: Path | None,
    schema_file: Path | None,
    from_target: str | None,
    backup_ref: str,
    anonymize: Path | None,
    seeds: tuple[str, ...],
    identity: Path | None,
    yes: bool,
    not_local: bool,
    as_json: bool,
) -> None:
    """Replace the local database DSN names with a fresh one: --schema FILE or --from TARGET, then --seed.

    The new database is built beside the old one, which is dropped only once everything loaded."""
    from dbguardian.localdb import refuse_remote, reset_local
    from dbguardian.postgres import connection_info_from_dsn

    if schema_file is not None and from_target is not None:
        raise UsageError("give --schema or --from, not both")
    refuse_remote(dsn, not_local)
    policy = policy_from(ctx)
    info = connection_info_from_dsn(dsn, password_file)
    if not info.database:
        raise UsageError("--dsn must name the database to reset (postgresql://me@localhost/app_dev)")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"this drops database {info.database!r} on {info.describe()}: confirm with --yes")
        click.confirm(f"Drop and rebuild database {info.database!r} on {info.describe()}?", abort=True)
    report = run_async(
        lambda: reset_local(
            policy,
            info,
            schema_file=schema_file,
            from_target=from_target,
            backup_ref=backup_ref,
            anonymize=anonymize,
            seeds=list(seeds),
            identity=identity,
        )
    )
    if as_json:
        click.echo(json.dumps(report.__dict__))
        return
    seeded = f", seeded with {', '.join(report.seeds)}" if report.seeds else ""
    click.echo(f"rebuilt {report.server} from {report.source}{seeded} ({report.seconds:.1f}s)")
    for table, rows in sorted(report.rows.items()):
        click.echo(f"  {table:<40} {rows:>10} rows")
