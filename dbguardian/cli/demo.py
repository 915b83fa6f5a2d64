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

from dbguardian.catalog import list_backups
from dbguardian.cli.common import run_async
from dbguardian.dbfacts import content_checksums
from dbguardian.devcluster import DevCluster, short_tempdir
from dbguardian.jobs.backup import run_backup, target_storages
from dbguardian.policy import Policy, load_policy
from dbguardian.postgres import connected, connection_info
from dbguardian.restore import restore, validate
from dbguardian.units import format_size


def write_demo_policy(workdir: Path, cluster: DevCluster, password_file: Path) -> Path:
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
                "schedules": {"daily": {"cron": "0 2 * * *", "keep": 7}},
            }
        },
    }
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def load_sample_data(cluster: DevCluster, database: str, owner: str) -> None:
    sql = resources.files("dbguardian").joinpath("sample_data.sql").read_text()
    cluster.psql(f'SET ROLE "{owner}";\n{sql}', database=database)


async def _checksums(policy: Policy, database: str) -> dict[str, str]:
    info = connection_info(policy.targets["app"]).with_database(database)
    async with connected(info) as connection:
        return await content_checksums(connection)


@click.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), help="Keep everything here.")
@click.option("--keep", is_flag=True, help="Leave the cluster running and the files in place.")
def command(workdir: Path | None, keep: bool) -> None:
    """Bring up a throwaway PostgreSQL with sample data, back it up, list, restore and verify."""
    base = workdir or short_tempdir("dbguardian-demo-")
    base.mkdir(parents=True, exist_ok=True)
    cluster = DevCluster(base / "pg")
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
        policy_path = write_demo_policy(base, cluster, password_file)
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
        records = run_async(lambda: list_backups(target_storages(policy, policy.targets["app"]), "app"))
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
        if keep:
            click.echo(f"   cluster left running on port {cluster.port}; try: dbguardian --policy {policy_path} list")
    finally:
        if not keep:
            cluster.stop()
            shutil.rmtree(base, ignore_errors=True)
