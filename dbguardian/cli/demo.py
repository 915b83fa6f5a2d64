"""``dbguardian demo``: a throwaway PostgreSQL with sample data, backed up, listed, restored and verified."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from importlib import resources
from pathlib import Path

import click
import yaml

from dbguardian.backup.logical import run_backup
from dbguardian.catalog import Catalog
from dbguardian.cli.common import run_async
from dbguardian.daemon import run_daemon
from dbguardian.dbfacts import content_checksums
from dbguardian.policy import Policy, load_policy
from dbguardian.postgres import connected, connection_info
from dbguardian.restore import restore, validate
from dbguardian.storage import target_storages
from dbguardian.throwaway import ThrowawayCluster, free_port, short_tempdir
from dbguardian.units import format_size


def write_demo_policy(workdir: Path, cluster: ThrowawayCluster, password_file: Path, metrics_port: int) -> Path:
    policy = {
        "version": 1,
        "state_dir": str(workdir / "state"),
        "storage": {"local": {"type": "local", "path": str(workdir / "backups")}},
        "targets": {
            "app": {
                "dsn": cluster.dsn("app", "backup"),
                "password_file": str(password_file),
                "storage": ["local"],
                "compression": {"algorithm": "zstd", "level": 3},
                "schedules": {"daily": {"cron": "0 2 * * *", "keep": 7}, "fast": {"every": "10s", "keep": 3}},
                # The sample data compresses to ~350 KiB: below the default 1 MiB floor of too_small.
                "health": {"min_size": "100KB"},
            }
        },
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "shutdown_grace": "20s",
    }
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def load_sample_data(cluster: ThrowawayCluster, database: str, owner: str) -> None:
    sql = resources.files("dbguardian").joinpath("sample_data.sql").read_text()
    cluster.psql(f'SET ROLE "{owner}";\n{sql}', database=database)


async def _checksums(policy: Policy, database: str) -> dict[str, str]:
    info = connection_info(policy.targets["app"]).with_database(database)
    async with connected(info) as connection:
        return await content_checksums(connection)


def _run_daemon(policy_path: Path, policy: Policy, metrics_port: int, seconds: float | None) -> None:
    how_long = f"for {seconds:g}s" if seconds else "until you press Ctrl-C"
    click.secho(f"== dbguardian run ({how_long}): tier 'fast' every 10s (Ctrl-C stops it gracefully)", bold=True)
    click.echo(f"   metrics: http://127.0.0.1:{metrics_port}/metrics   health: http://127.0.0.1:{metrics_port}/healthz")
    click.echo(f"   in another shell: dbguardian --policy {policy_path} list")
    code = asyncio.run(run_daemon(policy_path, policy, stop_after=seconds))
    click.secho(f"== daemon stopped cleanly (exit {code}); backups now:", bold=True)
    records = run_async(lambda: Catalog(target_storages(policy, "app")).logical_backups("app"))
    for record in records:
        manifest = record.manifest
        click.echo(
            f"   {manifest.id}  {manifest.tier:<7} {format_size(manifest.size_bytes):>10}  {manifest.finished_at:%H:%M:%S}"
        )


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), help="Keep everything here.")
@click.option("--keep", is_flag=True, help="Leave the cluster running and the files in place.")
@click.option(
    "--daemon-seconds",
    type=float,
    default=None,
    help="Run the daemon this long (default: until Ctrl-C; 0 skips it).",
)
def command(workdir: Path | None, keep: bool, daemon_seconds: float | None) -> None:
    """Throwaway PostgreSQL with sample data: back up, list, restore, verify; then run the daemon."""
    base = workdir or short_tempdir("dbguardian-demo-")
    base.mkdir(parents=True, exist_ok=True)
    cluster = ThrowawayCluster(base / "pg")
    click.secho(f"== starting a throwaway PostgreSQL in {base} (port {cluster.port})", bold=True)
    cluster.start()
    try:
        password = secrets.token_urlsafe(16)
        password_file = base / "backup.password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        cluster.create_role("backup", password)
        cluster.psql("CREATE DATABASE app OWNER backup")
        load_sample_data(cluster, "app", owner="backup")
        metrics_port = free_port()
        policy_path = write_demo_policy(base, cluster, password_file, metrics_port)
        click.echo(f"   sample data loaded into 'app'; policy written to {policy_path}")
        policy = load_policy(policy_path)

        click.secho("== dbguardian backup app", bold=True)
        manifest = run_async(lambda: run_backup(policy, "app", "manual"))
        click.echo(
            f"   {manifest.id}: {format_size(manifest.raw_size_bytes)} dumped -> "
            f"{format_size(manifest.size_bytes)} stored (zstd), {len(manifest.tables)} tables, "
            f"sha256 {manifest.sha256[:16]}…"
        )

        click.secho("== dbguardian list app --json", bold=True)
        records = run_async(lambda: Catalog(target_storages(policy, "app")).logical_backups("app"))
        click.echo(json.dumps([record.to_json() for record in records], indent=2))

        click.secho("== dbguardian restore app latest --validate-only", bold=True)
        report = run_async(lambda: validate(policy, "app", "latest"))
        click.echo(f"   valid: checksum ok, {report.toc_entries} archive entries")

        click.secho("== dbguardian restore app latest --into app_restored", bold=True)
        restored = run_async(lambda: restore(policy, "app", "latest", "app_restored"))
        click.echo(
            f"   {restored.tables} tables / {restored.rows} rows restored in {restored.seconds:.1f}s; row counts match"
        )

        click.secho("== verification: content checksums, source vs restored", bold=True)
        source = asyncio.run(_checksums(policy, "app"))
        copy = asyncio.run(_checksums(policy, "app_restored"))
        for name in sorted(source):
            mark = "ok" if source[name] == copy.get(name) else "DIFFERENT"
            click.echo(f"   {mark:<9} {name:<36} {source[name][:12]}")
        if source != copy:
            raise click.ClickException("the restored database differs from the source")
        click.secho(
            f"== all {len(source)} checksums match: the backup restores to identical data",
            bold=True,
            fg="green",
        )
        if daemon_seconds != 0:
            _run_daemon(policy_path, policy, metrics_port, daemon_seconds)
        if keep:
            click.echo(f"   cluster left running on port {cluster.port}; try: dbguardian --policy {policy_path} list")
    finally:
        if not keep:
            cluster.stop()
            shutil.rmtree(base, ignore_errors=True)
