"""`dbguardian wal-fetch`: PostgreSQL's ``restore_command`` — one archived WAL file back into ``pg_wal``.

Runs once per segment during recovery (fewer with prefetch), so the library is imported only once the
arguments are parsed. Errors are one line on stderr: exit 1 when no storage has the file (PostgreSQL
asks for files that do not exist and takes 1 as "not archived"), 2 for bad usage or policy.
"""

from __future__ import annotations

from pathlib import Path

import click


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
    help="On a download, also fetch this many following segments (served to the next calls); 0: off.",
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
) -> None:
    """Write the archived WAL file NAME to DEST, for restore_command.

    \b
    restore_command = 'dbguardian --policy /etc/dbguardian/policy.yaml wal-fetch --target app %f %p'

    Exit 0 when DEST holds the file (decrypted, decompressed, checked, written
    atomically); 1 when no storage has it.
    """
    from dbguardian.walfile import serve_prefetched

    # Most calls of a replay find their segment prefetched: hand it over without loading the policy.
    if prefetch and serve_prefetched(name, dest):
        return
    from dbguardian.archiving.fetch import fetch_wal
    from dbguardian.cli.common import run_async
    from dbguardian.errors import DbguardianError, UsageError
    from dbguardian.policy import load_policy

    try:
        policy = load_policy(policy_path or ctx.find_root().obj["policy_path"])
        names = [target] if target else [key for key, config in policy.targets.items() if config.wal is not None]
        if len(names) != 1:
            raise UsageError("several targets have wal:; name one with --target" if names else "no target has wal:")
        run_async(lambda: fetch_wal(policy, names[0], name, dest, identity=identity, prefetch=prefetch))
    except DbguardianError as error:
        from dbguardian.cli.common import fail

        fail(error)
