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
    type=click.Path(path_type=Path, file_okay=False),
    help="The spool directory (created 0700 if missing); default: the wal.spool of the policy's target.",
)
@click.option("--target", help="The policy target whose wal.spool to use (when several targets have wal:).")
@click.pass_context
def command(ctx: click.Context, path: Path, spool_dir: Path | None, target: str | None) -> None:
    """Copy the finished WAL file PATH durably into the spool, for archive_command.

    \b
    archive_command = 'dbguardian wal-push %p'
    archive_command = 'dbguardian wal-push --spool DIR %p'   (faster: no policy to read)

    Exit 0 when the file is in the spool (also when it already was, with the same
    content); 1 when it could not be copied or a different file of that name is
    already there (WAL is never overwritten).
    """
    try:
        push(path, spool_dir if spool_dir is not None else _policy_spool(ctx, target))
    except SpoolError as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(1)


def _policy_spool(ctx: click.Context, target: str | None) -> Path:
    """The spool from the policy (loaded only when --spool is not given: pydantic costs ~0.2 s)."""
    from dbguardian.errors import DbguardianError
    from dbguardian.policy import load_policy

    try:
        policy = load_policy(ctx.find_root().obj["policy_path"])
        names = [target] if target else [name for name, config in policy.targets.items() if config.wal is not None]
        if len(names) != 1:
            raise SpoolError("several targets have wal:; name one with --target" if names else "no target has wal:")
        wal = policy.target(names[0]).wal
        if wal is None:
            raise SpoolError(f"target {names[0]!r} has no 'wal:' block")
        return wal.spool
    except SpoolError:
        raise
    except DbguardianError as error:
        raise SpoolError(str(error).splitlines()[0]) from None
