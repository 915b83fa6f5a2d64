"""`dbguardian wal-fetch`: PostgreSQL's ``restore_command`` — one archived WAL file back into ``pg_wal``.

Runs once per segment during recovery; a prefetched segment is handed over before anything heavy is
imported. Errors are one line on stderr: exit 1 only when no storage has the file (PostgreSQL asks for
files that do not exist and takes 1 as "not archived"); every other failure exits 126 (see
``STOP_RECOVERY``): an unreachable storage must never look like the end of the archive.
"""

from __future__ import annotations

from pathlib import Path

import click

STOP_RECOVERY = 126
"""PostgreSQL treats a restore_command exit status above 125 like a signal: recovery stops (FATAL)
instead of ending as if the archive ended there. Restart the server once the cause is fixed."""


@click.command("wal-fetch")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The policy file (default: the one given before the command, $DBGUARDIAN_POLICY or /etc/dbguardian/policy.yaml).",
)
@click.option("--target", help="The policy target whose archive to read (when several targets have wal:).")
@click.option(
    "--identity",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Private key file for encrypted WAL (default: $DBGUARDIAN_IDENTITY_FILE).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(0, 64),
    default=8,
    show_default=True,
    help="Keep this many following segments downloaded ahead of recovery (a fetcher process shared by the "
    "calls, in pg_wal/.dbguardian-prefetch); 0: every call downloads its own file.",
)
@click.option("--queue-server", is_flag=True, hidden=True, help="Run the prefetch queue's fetcher (started by wal-fetch).")
@click.option("--queue-key", default="", hidden=True, help="The options the queue's callers must share.")
@click.option(
    "--queue-idle",
    type=click.FloatRange(0.1, 3600),
    default=60.0,
    hidden=True,
    help="Seconds without a request after which the queue's fetcher exits.",
)
@click.pass_context
def command(
    ctx: click.Context,
    name: str,
    dest: Path,
    policy_path: Path | None,
    target: str | None,
    identity: Path | None,
    prefetch: int,
    queue_server: bool,
    queue_key: str,
    queue_idle: float,
) -> None:
    """Write the archived WAL file NAME to DEST, for restore_command.

    \b
    restore_command = 'dbguardian --policy /etc/dbguardian/policy.yaml wal-fetch --target app %f %p'

    Exit 0 when DEST holds the file (decrypted, decompressed, checked, written
    atomically); 1 when every storage answered and none has it (PostgreSQL then
    ends recovery: the end of the archive); 126 for anything else (a storage that
    did not answer, a bad policy or identity, a corrupt object), which makes
    PostgreSQL stop recovery instead of promoting at the wrong point.
    """
    from dbguardian.walfile import serve_prefetched

    # Normally dbguardian.cli.fetch_fast answered before click was loaded; here the queue could not.
    if prefetch and not queue_server and serve_prefetched(name, dest):
        return
    from dbguardian.archiving.fetch import WalNotArchived, fetch_wal
    from dbguardian.cli.common import run_async
    from dbguardian.errors import DbguardianError, UsageError
    from dbguardian.logs import redact_text
    from dbguardian.policy import load_policy

    try:
        policy = load_policy(policy_path or ctx.find_root().obj["policy_path"])
        names = [target] if target else [key for key, config in policy.targets.items() if config.wal is not None]
        if len(names) != 1:
            raise UsageError("several targets have wal:; name one with --target" if names else "no target has wal:")
        if queue_server:
            from dbguardian.archiving.prefetch import serve_queue

            chosen, queue_dest = names[0], dest.absolute()
            run_async(
                lambda: serve_queue(
                    policy,
                    chosen,
                    queue_dest,
                    identity=identity,
                    prefetch=prefetch,
                    idle=queue_idle,
                    first=name,
                    key=queue_key,
                )
            )
            return
        run_async(lambda: fetch_wal(policy, names[0], name, dest, identity=identity, prefetch=prefetch))
    except WalNotArchived as error:
        click.echo(f"error: {error}", err=True)
        ctx.exit(1)
    except DbguardianError as error:
        click.echo(f"error: {redact_text(str(error))}", err=True)
        ctx.exit(STOP_RECOVERY)
    except Exception as error:  # a bug must not read as "not archived" either
        click.echo(f"error: wal-fetch failed unexpectedly: {error!r}", err=True)
        ctx.exit(STOP_RECOVERY)
