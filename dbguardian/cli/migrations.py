"""`dbguardian migrations lint` and `migrations test`: a migration directory checked and rehearsed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.errors import UsageError


@click.group("migrations")
def command() -> None:
    """Migration files (NNN_name.up.sql / .down.sql, or NNN_name/up.sql / down.sql): lint and up/down/up test."""


@command.command("lint")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def lint(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Check naming, sequence, up/down pairs, that each file parses, and risky statements; exit 1 on errors."""
    from dbguardian.migrations.lint import lint as run_lint

    findings = run_lint(list(paths))
    if as_json:
        click.echo(json.dumps([{**asdict(item), "path": str(item.path)} for item in findings], indent=2))
    else:
        for item in findings:
            click.echo(str(item))
        errors = sum(item.severity == "error" for item in findings)
        click.echo(f"{errors} error(s), {len(findings) - errors} warning(s)", err=True)
    if any(item.severity == "error" for item in findings):
        ctx.exit(1)


@command.command("test")
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--target", help="Test on this target's server (and --from-backup its backup).")
@click.option("--dsn", metavar="URL", help="Test on this server instead (postgresql://user@host:port/db; no password).")
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False), help="With --dsn: the password file.")
@click.option("--from-backup", metavar="ID|latest", help="Start from the target's backup restored, not an empty database.")
@click.option("--identity", type=click.Path(path_type=Path, dir_okay=False), help="Key for an encrypted backup.")
@click.option("--verbose", is_flag=True, help="Print every step, and the full schema diff of a failure.")
@click.option("--keep", is_flag=True, help="Keep the scratch database (its name is printed).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def test(
    ctx: click.Context,
    directory: Path,
    target: str | None,
    dsn: str | None,
    password_file: Path | None,
    from_backup: str | None,
    identity: Path | None,
    verbose: bool,
    keep: bool,
    as_json: bool,
) -> None:
    """Apply every migration up, then down in reverse, then up again on a scratch database, comparing the
    schema after each step; exit 1 on the first failure. The scratch database is always removed (unless --keep)."""
    from dbguardian.migrations.runner import test_migrations
    from dbguardian.postgres import connection_info, connection_info_from_dsn

    policy = policy_from(ctx.find_root())
    if dsn is None and target is None:
        names = list(policy.targets)
        if len(names) != 1:
            raise UsageError("name the server: --target TARGET or --dsn URL")
        target = names[0]
    if password_file is not None and dsn is None:
        raise UsageError("--password-file goes with --dsn")
    server = connection_info_from_dsn(dsn, password_file) if dsn else connection_info(policy.target(str(target)))
    report = run_async(
        lambda: test_migrations(
            policy, directory, server, target_name=target, from_backup=from_backup, identity=identity, keep=keep
        )
    )
    if as_json:
        click.echo(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        click.echo(f"migrations in {directory} on {report.base} (scratch database {report.database})")
        for step in report.steps:
            if verbose or not step.ok:
                mark = "ok  " if step.ok else "FAIL"
                click.echo(f"  {mark} {step.step:<8} {step.migration:<40} {step.seconds:6.2f}s  {step.problem or ''}")
            if not step.ok and step.diff and verbose:
                click.echo(step.diff, nl=False)
        passed = sum(step.ok for step in report.steps)
        verdict = "all passed" if report.ok else "FAILED"
        click.echo(f"{passed} step(s) passed, {verdict}" + (f"; kept {report.database}" if report.kept else ""))
    if not report.ok:
        ctx.exit(1)
