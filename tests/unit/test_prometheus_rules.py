"""The shipped Prometheus alerting rules and Grafana dashboard: promtool checks and unit tests, structure.

tests/e2e/test_prometheus_e2e.py runs both against a real Prometheus scraping a real daemon.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "prometheus" / "dbguardian.rules.yml"
RULE_TESTS = REPO / "config" / "prometheus" / "dbguardian.rules.test.yml"
DASHBOARD = REPO / "config" / "grafana" / "dbguardian.json"

REQUIRED_ALERTS = {
    "DbguardianBackupTooOld",
    "DbguardianLastBackupFailed",
    "DbguardianStorageUnreachable",
    "DbguardianIntegrityFailure",
    "DbguardianDaemonDown",
    "DbguardianMissedRuns",
    "DbguardianPolicyReloadFailed",
    "DbguardianWalArchivingStale",
    "DbguardianWalBacklog",
    "DbguardianWalShipFailing",
    "DbguardianArchiverFailing",
    "DbguardianWalGap",
    "DbguardianBaseBackupTooOld",
}
CRITICAL_ALERTS = {
    "DbguardianBackupTooOld",
    "DbguardianIntegrityFailure",
    "DbguardianDaemonDown",
    "DbguardianWalArchivingStale",
    "DbguardianArchiverFailing",
    "DbguardianWalGap",
}
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian/Ubuntu: apt-get install prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


def load_rules(path: Path = RULES) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"] if "alert" in rule]


# ------------------------------------------------------------------------------------------ rules


@needs_promtool
@pytest.mark.slow  # runs promtool
def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
@pytest.mark.slow  # runs promtool
def test_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_severity_for_and_runbook() -> None:
    groups = load_rules()["groups"]
    assert [group["name"] for group in groups] == ["dbguardian"]
    rules = alerting_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "one rule per alert name"
    assert set(names) >= REQUIRED_ALERTS
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), rule["alert"]
        assert "README.md" in annotations["runbook"], rule["alert"]
    severities = {rule["alert"]: rule["labels"]["severity"] for rule in rules}
    for critical in CRITICAL_ALERTS:
        assert severities[critical] == "critical", critical


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = load_rules(RULE_TESTS)
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


# ------------------------------------------------------------------------------------------ dashboard

# What Grafana puts in for the variables when it sends a query; "All" of a multi-value variable is `.*`.
VARIABLE_VALUES = {"target": ".*", "tier": ".*", "__rate_interval": "5m", "__interval": "1m", "__range": "1d"}


def substitute(expr: str) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda match: VARIABLE_VALUES[match.group(1)], expr)


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL with the variables filled in) for every query of every panel (rows have none)."""
    return [
        (panel["title"], target["refId"], substitute(target["expr"]))
        for panel in load_dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def variable_selectors() -> dict[str, tuple[str, str]]:
    """Query variables: name -> (series selector, label) of their label_values(selector, label)."""
    selectors = {}
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            assert variable["query"]["query"] == variable["definition"]
            selectors[variable["name"]] = (substitute(match.group(1)), match.group(2))
    return selectors


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] and dashboard["title"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert set(variables) == {"DS_PROMETHEUS", "target", "tier"}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("target", "tier"):
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["includeAll"] and variables[name]["multi"] and variables[name]["allValue"] == ".*"
    assert variable_selectors()["target"][1] == "target"
    assert variable_selectors()["tier"][1] == "tier"

    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        if panel["type"] == "row":  # an expanded row: a full-width header; its panels follow it at top level
            assert (grid["x"], grid["w"], grid["h"]) == (0, 24, 1), panel["title"]
            assert panel["collapsed"] is False and panel["panels"] == [] and "targets" not in panel, panel["title"]
        else:
            assert panel["datasource"] == DATASOURCE, panel["title"]
            assert panel["description"], panel["title"]
            refs = [target["refId"] for target in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, panel["title"]
                assert target["expr"].strip(), panel["title"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_dashboard_covers_the_backup_metrics() -> None:
    panels = load_dashboard()["panels"]
    exprs = " ".join(target["expr"] for panel in panels for target in panel.get("targets", []))
    for metric in (
        "dbguardian_backup_last_success_timestamp_seconds",
        "dbguardian_backup_age_seconds",
        "dbguardian_backup_last_stored_bytes",
        "dbguardian_backup_last_raw_bytes",
        "dbguardian_backup_duration_seconds_bucket",
        "dbguardian_backup_duration_seconds_sum",
        "dbguardian_backup_duration_seconds_count",
        "dbguardian_backup_runs_total",
        "dbguardian_health_check_ok",
        "dbguardian_storage_write_failures_total",
        "dbguardian_missed_runs_total",
        "dbguardian_job_next_run_timestamp_seconds",
    ):
        assert metric in exprs, metric
    assert "histogram_quantile(" in exprs
    types = {panel["title"]: panel["type"] for panel in panels}
    assert types["Newest backup age"] == "stat"
    assert types["Backup age by target and tier"] == "timeseries"
    assert types["Health checks"] == "table"


WAL_METRICS = (
    "dbguardian_rpo_seconds",
    "dbguardian_drill_rpo_seconds",
    "dbguardian_wal_last_archived_timestamp_seconds",
    "dbguardian_wal_spool_segments",
    "dbguardian_wal_spool_bytes",
    "dbguardian_wal_segments_shipped_total",
    "dbguardian_wal_ship_failures_total",
    "dbguardian_wal_ship_duration_seconds_bucket",
    "dbguardian_wal_ship_duration_seconds_sum",
    "dbguardian_wal_ship_duration_seconds_count",
)


def test_dashboard_covers_the_wal_metrics_in_their_row() -> None:
    panels = load_dashboard()["panels"]
    rows = [panel for panel in panels if panel["type"] == "row"]
    assert [row["title"] for row in rows] == ["WAL archiving"]
    row_y = rows[0]["gridPos"]["y"]
    wal_panels = [panel for panel in panels if panel["type"] != "row" and panel["gridPos"]["y"] > row_y]
    # Every panel under the row is about WAL, and every panel about WAL is under the row.
    for panel in panels:
        if panel["type"] == "row":
            continue
        exprs = " ".join(target["expr"] for target in panel["targets"])
        about_wal = any(metric in exprs for metric in WAL_METRICS)
        assert about_wal == (panel in wal_panels), panel["title"]
        assert panel["gridPos"]["y"] > row_y or panel["gridPos"]["y"] + panel["gridPos"]["h"] <= row_y, panel["title"]
    exprs = " ".join(target["expr"] for panel in wal_panels for target in panel["targets"])
    for metric in WAL_METRICS:
        assert metric in exprs, metric
    assert "time() - max by (target, storage) (dbguardian_wal_last_archived_timestamp_seconds" in exprs
    assert "histogram_quantile(0.95, sum by (target, le) (rate(dbguardian_wal_ship_duration_seconds_bucket" in exprs
    types = {panel["title"]: panel["type"] for panel in wal_panels}
    assert types["Recovery point (RPO)"] == "stat"
    assert types["Recovery point by target"] == "timeseries"
    assert types["Newest archived WAL age by storage"] == "timeseries"


@needs_promtool
@pytest.mark.slow  # runs promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool has no expression checker; as recording rules, `promtool check rules` parses each query."""
    records = [
        {"record": f"dashboard:q{index}", "expr": expr, "labels": {"panel": title, "ref": ref}}
        for index, (title, ref, expr) in enumerate(dashboard_queries())
    ]
    records += [
        {"record": f"dashboard:variable_{name}", "expr": selector} for name, (selector, _) in variable_selectors().items()
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}, sort_keys=False))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(records)} rules found" in result.stdout
