"""`schema dump` / `schema diff` against a real PostgreSQL: stable text, drift named and shown."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from dbguardian.throwaway import free_port
from tests.conftest import PolicyFactory, Postgres, run_cli
from tests.support.daemon import DaemonProcess
from tests.support.pg import backup
from tests.support.receivers import HttpReceiver


def test_schema_dump_is_stable_and_diff_names_the_drift(
    pg: Postgres, database: str, make_policy: PolicyFactory, dropper: Callable[[str], str], tmp_path: Path
) -> None:
    policy = make_policy(database)
    first = run_cli(policy, "schema", "dump", "app")
    second = run_cli(policy, "schema", "dump", "app")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # byte-identical
    text = first.stdout
    assert "CREATE TABLE shop.orders" in text and "Dumped from" not in text and "\\restrict" not in text
    assert "OWNER TO" not in text and "GRANT " not in text
    with_privileges = run_cli(policy, "schema", "dump", "app", "--with-privileges")
    assert "OWNER TO" in with_privileges.stdout

    committed = tmp_path / "db" / "schema.sql"
    committed.parent.mkdir()
    assert run_cli(policy, "schema", "dump", "app", "-o", str(committed)).returncode == 0
    assert committed.read_text() == text
    same = run_cli(policy, "schema", "diff", "app", "--against", str(committed))
    assert same.returncode == 0 and "matches" in same.stdout

    # Across a restore: the copy has the same schema text, compared target to target.
    backup(policy)
    copy = dropper(f"{database}_schema")
    assert run_cli(policy, "restore", "app", "--into", copy).returncode == 0
    config = yaml.safe_load(policy.read_text())
    config["targets"]["copy"] = {**config["targets"]["app"], "dsn": pg.dsn(copy)}
    policy.write_text(yaml.safe_dump(config, sort_keys=False))
    across = run_cli(policy, "schema", "diff", "copy", "--against", "app")
    assert across.returncode == 0, across.stdout + across.stderr

    pg.psql("ALTER TABLE shop.orders ADD COLUMN drift_note text", database)
    pg.psql("CREATE INDEX orders_drift_idx ON shop.orders (drift_note)", database)
    drift = run_cli(policy, "schema", "diff", "app", "--against", str(committed))
    assert drift.returncode == 1
    assert "# added column shop.orders.drift_note" in drift.stdout and "# added index orders_drift_idx" in drift.stdout
    assert "+    drift_note text" in drift.stdout and f"--- {committed}" in drift.stdout
    between = run_cli(policy, "schema", "diff", "app", "--against", "copy")
    assert between.returncode == 1 and "# added column shop.orders.drift_note" in between.stdout
    missing = run_cli(policy, "schema", "diff", "app", "--against", "nowhere.sql")
    assert missing.returncode == 2 and "neither a target" in missing.stderr


def test_scheduled_drift_check_alerts_what_changed_and_resolves(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path, http: HttpReceiver,
    daemons: list[DaemonProcess],
) -> None:  # fmt: skip
    port = free_port()
    slack_url = tmp_path / "slack.url"
    slack_url.write_text(http.url("/slack/T1/B1/drift-token") + "\n")
    policy = make_policy(
        database,
        schedules={},
        schema={"file": "db/schema.sql", "every": "1s"},  # relative to the policy file
        extra={"catch_up": False, "metrics": {"listen": f"127.0.0.1:{port}"}, "health": {"every": "1h"},
               "alerts": {"retries": 0, "slack": {"webhook_url_file": str(slack_url)}}},
    )  # fmt: skip
    schema_file = policy.parent / "db" / "schema.sql"
    schema_file.parent.mkdir()
    assert run_cli(policy, "schema", "dump", "app", "-o", str(schema_file)).returncode == 0

    def titles() -> list[str]:
        return [post["blocks"][0]["text"]["text"] for post in http.posts("/slack/T1/B1/drift-token")]

    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()
    daemon.wait_for("a first check", lambda: daemon.metric("dbguardian_schema_drift", target="app") == 0, timeout=20)

    pg.psql("ALTER TABLE shop.customers ADD COLUMN loyalty_tier text", database)
    firing = "🔴 [dbguardian FIRING] app: schema_drift"
    daemon.wait_for("the drift alert", lambda: firing in titles(), timeout=30)
    assert daemon.metric("dbguardian_schema_drift", target="app") == 1
    post = http.posts("/slack/T1/B1/drift-token")[0]
    fields = " ".join(field["text"] for field in post["blocks"][1]["fields"])
    assert "added column shop.customers.loyalty_tier" in fields

    # The migration was meant: the file is updated, and the alert resolves.
    assert run_cli(policy, "schema", "dump", "app", "-o", str(schema_file)).returncode == 0
    resolved = "✅ [dbguardian RESOLVED] app: schema_drift"
    daemon.wait_for("resolved", lambda: resolved in titles(), timeout=30)
    assert titles() == [firing, resolved]  # once per incident
    assert daemon.metric("dbguardian_schema_drift", target="app") == 0
    assert daemon.stop() == 0
    pg.psql("ALTER TABLE shop.customers DROP COLUMN loyalty_tier", database)
