"""What `dbguardian backup` imports before pg_dump starts (issue 14): only the routine of the kind it runs,
and for a schedule tier (cron) the daemon's pieces around it, not the job table's other kinds.

The command runs for real in a subprocess against a port nobody listens on, so it gets as far as
connecting (every import of its branch done) and fails at once; the probe then lists ``sys.modules``.
Module presence, not timing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

PHYSICAL_ONLY = {"dbguardian.backup.physical", "dbguardian.archiving.ship", "dbguardian.catalog.archive"}
"""The base backup's driver and the WAL shipper pass it gives its WAL."""

NEVER_FOR_A_MANUAL_BACKUP = {
    "dbguardian.oneshot",  # a schedule tier's pings, prune, health checks and alerts
    "dbguardian.jobs",
    "dbguardian.runner",
    "dbguardian.daemon",
    "dbguardian.alerts",
    "dbguardian.restore",
    "apscheduler",
    "httpx",
    "prometheus_client",
    "aioboto3",
}

OTHER_JOB_KINDS = {
    "dbguardian.jobs.registry",
    "dbguardian.jobs.drill",
    "dbguardian.jobs.pitr_drill",
    "dbguardian.jobs.verify",
    "dbguardian.jobs.wal_ship",
    "dbguardian.jobs.wal_check",
    "dbguardian.jobs.schema_drift",
    "dbguardian.restore",
    "dbguardian.scratch",
    "dbguardian.schemadump",
    "dbguardian.runner",
    "dbguardian.daemon",
    "dbguardian.handover",
    "dbguardian.leadership",
}

PROBE = (
    "import sys\n"
    "sys.argv = ['dbguardian', *sys.argv[1:]]\n"
    "import dbguardian.entry\n"
    "def keep_running(status):\n"  # the command's fast exit would end the probe before it reports
    "    raise SystemExit(status)\n"
    "dbguardian.entry.exit_now = keep_running\n"
    "try:\n"
    "    import dbguardian.__main__\n"
    "except SystemExit as exit:\n"
    "    print('exit', exit.code, file=sys.stderr)\n"
    "print(' '.join(sorted(sys.modules)))\n"
)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting is refused at once


def loaded_by_backup(tmp_path: Path, *args: str) -> set[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"storage: {{local: {{type: local, path: {tmp_path / 'backups'}}}}}\n"
        "targets:\n"
        "  app:\n"
        f"    dsn: postgresql://postgres@127.0.0.1:{closed_port()}/app\n"
        "    storage: [local]\n"
        "    schedules: {daily: {cron: '0 2 * * *', keep: 3}}\n"
        f"    wal: {{spool: {tmp_path / 'spool'}}}\n"
    )
    argv = ["--policy", str(policy), "--log-level", "error", "backup", "app", *args]
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60, check=False)
    assert "cannot connect" in result.stderr and "exit 1" in result.stderr, result.stderr
    return set(result.stdout.split())


def packages(modules: set[str], names: set[str]) -> set[str]:
    """``names`` (packages or modules) of which something is loaded."""
    return {name for name in names if any(module == name or module.startswith(f"{name}.") for module in modules)}


def test_a_logical_backup_imports_neither_the_physical_kind_nor_the_daemons_pieces(tmp_path: Path) -> None:
    modules = loaded_by_backup(tmp_path)
    assert "dbguardian.backup.logical" in modules  # the probe got as far as the backup
    assert packages(modules, PHYSICAL_ONLY | NEVER_FOR_A_MANUAL_BACKUP) == set()


def test_a_base_backup_imports_its_kind(tmp_path: Path) -> None:
    """The probe sees what a branch imports (else the test above would pass for nothing)."""
    modules = loaded_by_backup(tmp_path, "--physical")
    assert modules >= PHYSICAL_ONLY
    assert packages(modules, NEVER_FOR_A_MANUAL_BACKUP) == set()


def test_a_cron_backup_imports_what_runs_around_it_and_no_other_job_kind(tmp_path: Path) -> None:
    modules = loaded_by_backup(tmp_path, "--tier", "daily")
    assert {"dbguardian.oneshot", "dbguardian.jobs.health", "dbguardian.alerts.dispatch"} <= modules
    assert packages(modules, {"dbguardian.backup.physical", "dbguardian.archiving.ship"} | OTHER_JOB_KINDS) == set()


def test_pydantic_does_not_look_for_plugins(tmp_path: Path) -> None:
    # pydantic scans every installed distribution's entry points for plugins when the first model is
    # built, unless PYDANTIC_DISABLE_PLUGINS says not to (the entry point sets it; a user's value wins).
    probe = PROBE.replace(
        "print(' '.join(sorted(sys.modules)))\n",
        "import pydantic.plugin._loader as loader\nprint('scanned' if loader._plugins is not None else 'not scanned')\n",
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nstate_dir: {tmp_path / 'state'}\nstorage: {{local: {{type: local, path: {tmp_path}}}}}\n"
        f"targets: {{app: {{dsn: 'postgresql://postgres@127.0.0.1:{closed_port()}/app', storage: [local]}}}}\n"
    )
    argv = ["--policy", str(policy), "--log-level", "error", "backup", "app"]
    env = {key: value for key, value in os.environ.items() if key != "PYDANTIC_DISABLE_PLUGINS"}
    run = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=60, env=env)
    assert "cannot connect" in run.stderr, run.stderr
    assert run.stdout.split("\n")[-2:] == ["not scanned", ""], run.stdout
    with_plugins = subprocess.run(
        [sys.executable, "-c", probe, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYDANTIC_DISABLE_PLUGINS": ""},
    )
    assert with_plugins.stdout.split("\n")[-2:] == ["scanned", ""], with_plugins.stdout
