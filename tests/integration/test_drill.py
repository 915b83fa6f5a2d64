"""Restore drills and verify against the real PostgreSQL."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbguardian.drill import judge, pick_backup, scratch_name
from dbguardian.throwaway import free_port
from tests.conftest import PolicyFactory, Postgres, backup_dir, cli_env, run_cli
from tests.support.daemon import DaemonProcess
from tests.support.pg import backup
from tests.support.receivers import HttpReceiver


@pytest.mark.parametrize(
    ("value", "expect", "ok"),
    [
        (3, ">= 1", True), (0, ">= 1", False), (0, "= 0", True), (1, "== 0", False), (2.5, "> 2", True),
        (None, ">= 1", False), (None, "null", True), (True, "true", True), (False, "true", False),
        (False, "false", True), (1, "true", False), ("", "empty", True), (5, "!= 5", False), (5, "<> 4", True),
        ("7", "< 10", True), ("abc", "< 10", False),
    ],
)  # fmt: skip
def test_judge(value: Any, expect: str, ok: bool) -> None:
    assert judge(value, expect) is ok


def test_pick_and_scratch_name() -> None:
    backups = ["b5", "b4", "b3", "b2", "b1"]
    assert pick_backup(backups, "newest", 3, random.Random(1)) == "b5"
    picked = {pick_backup(backups, "random_recent", 3, random.Random(seed)) for seed in range(50)}
    assert picked == {"b5", "b4", "b3"}
    name = scratch_name("App-Prod.eu" * 10, "abcd1234")
    assert name.startswith("dbguardian_drill_app_prod_eu") and name.endswith("_abcd1234") and len(name) <= 63


def drills(pg: Postgres) -> str:
    return pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'dbguardian_drill_%'")


def drill_json(policy: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli(policy, "drill", "app", "--json", *args, timeout=180)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout[: result.stdout.rindex("}") + 1])


CHECKS = [
    {"name": "orders exist", "sql": "SELECT count(*) FROM shop.orders", "expect": ">= 1"},
    {"name": "no negative credit", "sql": "SELECT count(*) FROM shop.customers WHERE credit < 0", "expect": "= 0"},
]


@pytest.mark.parametrize("mode", ["server", "local_cluster"])
def test_drill_of_a_good_backup_passes_every_check(
    pg: Postgres, database: str, make_policy: PolicyFactory, mode: str
) -> None:
    policy = make_policy(database, drill={"mode": mode, "checks": CHECKS, "amcheck": mode == "local_cluster",
                                         "rto_target": "10m"})  # fmt: skip
    backup_id = backup(policy)
    sentinel = Path(tempfile.mkstemp(prefix="dbg-sentinel-", dir="/tmp")[1])
    code, report = drill_json(policy)
    # the throw-away cluster is removed, and nothing beside it (a regression: it once removed /tmp)
    assert sentinel.exists() and not list(Path("/tmp").glob("dbg-drill-*"))
    sentinel.unlink()
    assert code == 0, json.dumps(report, indent=1)
    assert report["ok"] is True and report["backup_id"] == backup_id and report["mode"] == mode
    names = [check["name"] for check in report["checks"]]
    assert names[:4] == ["row counts", "object counts", "check: orders exist", "check: no negative credit"]
    assert all(check["ok"] for check in report["checks"])
    assert "5 tables, 15005 rows as at dump time" in report["checks"][0]["observed"]
    if mode == "local_cluster":
        assert names[-1] == "amcheck" and "B-tree indexes checked" in report["checks"][-1]["observed"]
    assert set(report["timings"]) >= {"fetch", "restore", "verify", "total", "elapsed"}
    assert report["rto_ok"] is True
    assert report["database"].startswith("dbguardian_drill_app_")
    assert drills(pg) == "0"  # the scratch database is gone
    history = run_cli(policy, "drill", "history", "--json")
    assert [entry["backup_id"] for entry in json.loads(history.stdout)] == [backup_id]


def test_empty_user_check_and_missed_rto_fail(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    checks = [{"name": "recent orders", "sql": "SELECT 1 WHERE false", "expect": ">= 1"}]
    policy = make_policy(database, drill={"checks": checks, "rto_target": "1ms"})
    backup(policy)
    code, report = drill_json(policy)
    assert code == 1
    failing = {check["name"]: check for check in report["checks"] if not check["ok"]}
    assert list(failing) == ["check: recent orders"]
    assert failing["check: recent orders"]["observed"] == "no value (NULL or no row)"
    assert report["rto_ok"] is False
    assert drills(pg) == "0"


def test_tampered_manifest_counts_fail_naming_the_tables(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database)
    backup_id = backup(policy)
    path = backup_dir(policy) / "app" / backup_id / "manifest.json"
    manifest = json.loads(path.read_text())
    for table in manifest["tables"]:
        if table["table"] in ("orders", "events"):
            table["rows"] += 1
    path.write_text(json.dumps(manifest))
    code, report = drill_json(policy)
    assert code == 1
    [counts] = [check for check in report["checks"] if check["name"] == "row counts"]
    assert counts["ok"] is False
    assert counts["observed"] == "audit.events: 3000 rows, expected 3001; shop.orders: 10000 rows, expected 10001"
    assert drills(pg) == "0"


def test_corrupted_object_fails_verify_and_drill(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database)
    backup_id = backup(policy)
    result = run_cli(policy, "verify", "app")
    assert result.returncode == 0 and "1 object(s) verified" in result.stdout
    dump = backup_dir(policy) / "app" / backup_id / "dump.pgc.zst"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    result = run_cli(policy, "verify", "app", "--all")
    assert result.returncode == 1
    assert f"FAIL local:app/{backup_id}/dump.pgc.zst" in result.stdout
    assert f"failed verification: local:app/{backup_id}/dump.pgc.zst" in result.stderr
    code, report = drill_json(policy)
    assert code == 1 and report["error"]
    assert report["error"].startswith(f"local:app/{backup_id}/dump.pgc.zst: ")
    assert drills(pg) == "0"


def test_sigterm_mid_drill_drops_the_scratch_database(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    checks = [{"name": "slow", "sql": "SELECT pg_sleep(60)::text", "expect": "null"}]
    policy = make_policy(database, drill={"checks": checks})
    backup(policy)
    process = subprocess.Popen([sys.executable, "-m", "dbguardian", "--policy", str(policy), "drill", "app"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())  # fmt: skip
    deadline = time.monotonic() + 60
    while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'") == "0":
        assert time.monotonic() < deadline and process.poll() is None, "the drill never reached its checks"
        time.sleep(0.2)
    assert drills(pg) == "1"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1 and "interrupted by SIGTERM" in stderr
    assert drills(pg) == "0"


def test_daemon_drill_metrics_and_alert(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver,
    daemons: list[DaemonProcess],
) -> None:  # fmt: skip
    port = free_port()
    slack = tmp_path / "slack.url"
    slack.write_text(http.url("/slack"))
    checks = [{"name": "impossible", "sql": "SELECT count(*) FROM shop.orders", "expect": "= 0"}]
    policy = make_policy(database, schedules={}, drill={"every": "2s", "checks": checks},
                         extra={"catch_up": False, "metrics": {"listen": f"127.0.0.1:{port}"},
                                "alerts": {"slack": {"webhook_url_file": str(slack)}}})  # fmt: skip
    backup(policy)
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_for("a failed drill", lambda: daemon.metric("dbguardian_drill_last_result", target="app") == 0, 60)
    total = daemon.metric("dbguardian_drill_duration_seconds", target="app", phase="total")
    assert total is not None and total > 0
    daemon.wait_for("the drill alert", lambda: any(
        post["text"].startswith("🔴 [dbguardian FIRING] app: drill") for post in http.posts("/slack")), 30)  # fmt: skip
    assert daemon.stop() == 0
    assert drills(pg) == "0"


def test_drill_refuses_a_manifest_with_sql_in_its_encoding(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database)
    backup_id = backup(policy)
    path = backup_dir(policy) / "app" / backup_id / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["encoding"] = f"UTF8'; DROP DATABASE {database}; --"
    path.write_text(json.dumps(manifest))
    result = run_cli(policy, "drill", "app", "--json", timeout=180)
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["ok"] is False and report["error"]
    assert "is not a PostgreSQL encoding name" in result.stderr
    assert pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{database}'") == "1"
    assert drills(pg) == "0"


def test_drill_history_flag_and_a_target_named_history(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    policy = make_policy(database)
    config = yaml.safe_load(policy.read_text())
    config["targets"]["history"] = config["targets"]["app"]
    policy.write_text(yaml.safe_dump(config))
    app_backup = backup(policy)
    history_backup = run_cli(policy, "backup", "history").stdout.strip().splitlines()[-1]
    assert drill_json(policy)[0] == 0

    # With a target named history, `drill history` drills it; the history is listed with --history.
    result = run_cli(policy, "drill", "history", "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == "history" and report["backup_id"] == history_backup and report["ok"] is True
    listed_all = json.loads(run_cli(policy, "drill", "--history", "--json").stdout)
    expected = [("app", app_backup), ("history", history_backup)]
    assert [(entry["target"], entry["backup_id"]) for entry in listed_all] == expected
    for target, backup_id in (("app", app_backup), ("history", history_backup)):
        listed = json.loads(run_cli(policy, "drill", "--history", target, "--json").stdout)
        assert [(entry["target"], entry["backup_id"]) for entry in listed] == [(target, backup_id)]
    text = run_cli(policy, "drill", "--history")
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 2 and "PASS  history" in text.stdout
    assert drills(pg) == "0"

    # Without such a target, `drill history` still lists the history.
    del config["targets"]["history"]
    policy.write_text(yaml.safe_dump(config))
    listed_again = json.loads(run_cli(policy, "drill", "history", "--json").stdout)
    assert listed_again == listed_all
    result = run_cli(policy, "drill")
    assert result.returncode == 2 and "drill needs a TARGET (or --history)" in result.stderr
