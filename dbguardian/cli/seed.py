"""`dbguardian seed`: load a seed profile (or files) into a local database, in one transaction."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dbguardian.cli.common import policy_from, run_async


@click.command("seed")
@click.option("--dsn", required=True, metavar="URL", help="The local database (postgresql://me@localhost/app_dev).")
@click.option(
    "--password-file", type=click.Path(path_type=Path, dir_okay=False), help="Its password (default: $PGPASSWORD)."
)
@click.option("--profile", "profiles", multiple=True, required=True, metavar="PROFILE|FILE",
              help="A profile of the policy's seed.profiles, or an SQL file; repeat for more, in order.")  # fmt: skip
@click.option("--i-know-this-is-not-local", "not_local", is_flag=True, help="Allow a server that is not this machine.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def command(ctx: click.Context, dsn: str, password_file: Path | None, profiles: tuple[str, ...], not_local: bool,
            as_json: bool) -> None:  # fmt: skip
    """Load seed data in one transaction (all or nothing) and print each table's row count after."""
    from dbguardian.localdb import refuse_remote, seed
    from dbguardian.postgres import connection_info_from_dsn

    refuse_remote(dsn, not_local)
    policy = policy_from(ctx)
    info = connection_info_from_dsn(dsn, password_file)
    report = run_async(lambda: seed(policy, info, list(profiles)))
    if as_json:
        click.echo(json.dumps(report.__dict__))
        return
    click.echo(f"seeded {report.server} with {', '.join(report.seeds)} ({report.seconds:.1f}s)")
    for table, rows in sorted(report.rows.items()):
        click.echo(f"  {table:<40} {rows:>10} rows")
