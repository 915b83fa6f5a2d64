"""`dbguardian wal-push`: PostgreSQL's ``archive_command`` (13–14) — one WAL file into the spool.

Runs once per segment, so it imports only click and :mod:`dbguardian.spool` (no policy, no logging
setup, no asyncio); errors are one line on stderr and exit 1, which makes PostgreSQL keep the file and retry.
"""

from __future__ import annotations

from pathlib import Path

import click

from dbguardian.spool import SpoolError, push


@click.command("wal-push")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--spool",
    "spool_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The spool directory (created 0700 if missing).",
)
@click.pass_context
def command(ctx: click.Context, path: Path, spool_dir: Path) -> None:
    """Copy the finished WAL file PATH durably into the spool, for archive_command.

    \b
    archive_command = 'dbguardian wal-push --spool DIR %p'

    Exit 0 when the file is in the spool (also when it already was, with the same
    content); 1 when it could not be copied or a different file of that name is
    already there (WAL is never overwritten).
    """
    try:
        push(path, spool_dir)
    except SpoolError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(1)
