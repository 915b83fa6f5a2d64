"""`dbguardian schema dump` and `schema diff`: the schema as reviewable text, and what drifted."""

from __future__ import annotations

from pathlib import Path

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import UsageError
from dbguardian.files import fsync_dir, open_private
from dbguardian.schemadump import changes, dump_schema, unified_diff


@click.group("schema")
def command() -> None:
    """A target database's schema as normalized text (for git), and drift against a file or another target."""


@command.command("dump")
@click.argument("target")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True), default=Path("-"),
              show_default=True, help="File to write (replaced atomically); - for stdout.")  # fmt: skip
@click.option("--with-privileges", is_flag=True, help="Keep ownership and GRANT/REVOKE (left out by default).")
@click.pass_context
def dump(ctx: click.Context, target: str, output: Path, with_privileges: bool) -> None:
    """Print TARGET's schema (pg_dump --schema-only, normalized: the same schema gives the same bytes)."""
    policy = policy_from(ctx.find_root())
    policy.target(target)
    text = run_async(lambda: dump_schema(policy, target, with_privileges=with_privileges))
    if output == Path("-"):
        click.echo(text, nl=False)
        return
    temp = output.with_name(f".{output.name}.tmp")
    with open_private(temp, "w") as handle:
        handle.write(text)
    temp.chmod(0o644)  # a schema is for review in git, not a secret
    temp.replace(output)
    fsync_dir(output.absolute().parent)


@command.command("diff")
@click.argument("target")
@click.option("--against", required=True, metavar="FILE|TARGET", help="A schema file (schema dump's) or another target.")
@click.option("--with-privileges", is_flag=True, help="Compare ownership and privileges too.")
@click.pass_context
def diff(ctx: click.Context, target: str, against: str, with_privileges: bool) -> None:
    """Exit 0 when TARGET's schema equals the other's; 1 with what changed and a unified diff when not."""
    policy = policy_from(ctx.find_root())
    policy.target(target)
    actual = run_async(lambda: dump_schema(policy, target, with_privileges=with_privileges))
    if against in policy.targets:
        expected = run_async(lambda: dump_schema(policy, against, with_privileges=with_privileges))
        expected_name = f"target {against}"
    else:
        path = Path(against)
        if not path.is_file():
            raise UsageError(f"--against {against!r} is neither a target of the policy nor a file")
        from dbguardian.schemadump import normalize

        expected = normalize(path.read_text(), with_privileges=with_privileges)
        expected_name = str(path)
    if expected == actual:
        click.echo(f"schema of {target} matches {expected_name}")
        return
    for change in changes(expected, actual):
        click.echo(f"# {change}")
    click.echo(unified_diff(expected, actual, expected_name, f"target {target}"), nl=False)
    ctx.exit(1)
