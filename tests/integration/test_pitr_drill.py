"""A point-in-time restore drill end to end, with dbguardian running as the server's OS user (as on a DB
host): restore point → archived → newest base backup + WAL replayed to it in a throw-away cluster →
checks + amcheck → RTO and the recovery point recorded; the cluster is gone afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dbguardian.throwaway import short_tempdir
from tests.conftest import cli_env, run_cli
from tests.integration.test_pitr import as_server_user, executable_env, give_to_server_user
from tests.support.walcluster import WalCluster


def run_as_server_user(env: dict[str, str], policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [env["DBGUARDIAN_RESTORE_EXECUTABLE"]] if env else [sys.executable, "-m", "dbguardian"]
    return subprocess.run(
        as_server_user([*command, "--log-format", "json", "--policy", str(policy), *args]),
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(**env),
        cwd="/",
        check=False,
    )


def test_pitr_drill_passes_and_reports_rto_and_rpo(wal_cluster: WalCluster) -> None:
    base = short_tempdir("dbgpdrill-")
    try:
        drill = {
            "kind": "pitr",
            "amcheck": True,
            "checks": [
                {"name": "rows are there", "sql": "SELECT count(*) FROM drill_marker", "expect": ">= 3"},
            ],
        }
        policy = wal_cluster.policy(base, drill=drill)
        env = executable_env(base)
        wal_cluster.psql("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO backup")
        wal_cluster.psql("CREATE TABLE drill_marker (id int PRIMARY KEY); INSERT INTO drill_marker VALUES (1), (2)")
        wal_cluster.psql("ALTER TABLE drill_marker OWNER TO backup")
        backup = run_cli(policy, "backup", "app", "--physical")
        assert backup.returncode == 0, backup.stderr
        base_id = backup.stdout.strip().splitlines()[-1]
        wal_cluster.psql("INSERT INTO drill_marker VALUES (3)")  # only in the WAL after the base backup
        give_to_server_user(base)
        give_to_server_user(wal_cluster.password_file)

        result = run_as_server_user(env, policy, "drill", "app", "--json")
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        report = json.loads(result.stdout)
        assert report["ok"] is True and report["kind"] == "pitr"
        assert report["backup_id"] == base_id
        checks = {check["name"]: check for check in report["checks"]}
        assert checks["recovery point"]["ok"] and checks["check: rows are there"]["observed"] == "returned 3"
        assert checks["amcheck"]["ok"] and "B-tree indexes checked" in checks["amcheck"]["observed"]
        assert report["recovery"]["restore_point"].startswith("dbguardian-drill-")
        assert report["rpo_seconds"] is not None and 0 <= report["rpo_seconds"] < 60
        assert set(report["timings"]) >= {"fetch", "restore", "verify", "total"}
        assert report["timings"]["total"] > 0
        # The throw-away cluster and its directory are gone; the history has the drill.
        assert not list(Path("/tmp").glob("dbg-pitr-drill-*"))
        history = run_as_server_user(env, policy, "drill", "--history", "--json")
        assert history.returncode == 0, history.stderr
        assert json.loads(history.stdout)[-1]["rpo_seconds"] == report["rpo_seconds"]

        # A drill that cannot pass: a check that fails is reported, and the cluster is still removed.
        failing = wal_cluster.policy(base, drill={**drill, "checks": [
            {"name": "impossible", "sql": "SELECT count(*) FROM drill_marker", "expect": ">= 1000"}]})  # fmt: skip
        give_to_server_user(failing)
        bad = run_as_server_user(env, failing, "drill", "app", "--json")
        assert bad.returncode == 1
        assert json.loads(bad.stdout)["ok"] is False
        assert not list(Path("/tmp").glob("dbg-pitr-drill-*"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if os.geteuid() == 0:
            subprocess.run(["chown", "root:", str(wal_cluster.password_file)], check=False)
