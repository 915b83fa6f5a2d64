"""A real Prometheus with the shipped rules scrapes a real daemon: the stale-backup alert fires, the daemon-down
alert does not, every rule evaluates without error and every dashboard query runs; on a target with `wal:` the
WAL rules evaluate on the daemon's real WAL verdicts and gauges."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbguardian.throwaway import free_port
from dbguardian.walhealth import WAL_CHECKS
from tests.conftest import PolicyFactory
from tests.support.daemon import DaemonProcess
from tests.support.pg import backup
from tests.support.walcluster import WalCluster
from tests.unit.test_prometheus_rules import RULES, dashboard_queries, variable_selectors

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not installed (Debian/Ubuntu: apt-get install prometheus)"
)


class PrometheusServer:
    """``prometheus`` as a subprocess: 1s scrapes of one dbguardian, 1s rule evaluation, its own TSDB."""

    def __init__(self, workdir: Path, rules: Path, scrape_port: int) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            # The shipped rules select job="dbguardian" (DbguardianDaemonDown), as production must.
            "scrape_configs": [{"job_name": "dbguardian", "static_configs": [{"targets": [f"127.0.0.1:{scrape_port}"]}]}],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> tuple[int, str]:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}{query}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:  # the API answers 400/422 with a JSON error body
            return error.code, error.read().decode()

    def api(self, path: str, **params: str) -> dict[str, Any]:
        _, body = self.get(f"/api/v1/{path}", **params)
        data: dict[str, Any] = json.loads(body)
        return data

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["data"]["alerts"]
        return alerts

    def wait_for(
        self, what: str, predicate: Callable[[], Any], timeout: float = 60, context: Callable[[], str] = lambda: ""
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.process.returncode}):\n{self.log_path.read_text()[-3000:]}")
            try:
                value = predicate()
            except (OSError, ValueError):  # not listening yet, or not answering JSON yet
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{context()}\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def prometheus_servers() -> Iterator[list[PrometheusServer]]:
    started: list[PrometheusServer] = []
    yield started
    for server in started:
        server.stop()


def rules_without_waiting(workdir: Path) -> Path:
    """A copy of the shipped rules with every `for:` set to 0s.

    Prometheus cannot override `for` at run time, and the shipped values (minutes) are what production should
    wait; the test only proves that the expressions fire on the daemon's real metrics.
    """
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    path = workdir / "dbguardian.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def test_stale_backup_alert_fires_in_a_real_prometheus(
    database: str,
    make_policy: PolicyFactory,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    prometheus_servers: list[PrometheusServer],
) -> None:
    port = free_port()
    # One backup now; no scheduled run will happen during the test (02:00 daily, no catch-up), and the health job
    # runs every second with max_age 2s, so the daemon soon calls that backup stale.
    policy = make_policy(
        database,
        schedules={"daily": {"cron": "0 2 * * *", "keep": 7}},
        extra={"metrics": {"listen": f"127.0.0.1:{port}"}, "catch_up": False, "health": {"every": "1s", "max_age": "2s"}},
    )
    backup(policy)
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()

    prometheus = PrometheusServer(tmp_path, rules_without_waiting(tmp_path), port)
    prometheus_servers.append(prometheus)
    prometheus.wait_for("prometheus ready", lambda: prometheus.get("/-/ready")[0] == 200)

    def too_old() -> dict[str, Any] | None:
        for alert in prometheus.alerts():
            if alert["labels"]["alertname"] == "DbguardianBackupTooOld" and alert["state"] == "firing":
                return alert
        return None

    def diagnosis() -> str:
        alerts = json.dumps(prometheus.alerts(), indent=1)[-3000:]
        return f"alerts: {alerts}\ndaemon log: {daemon.log_path.read_text()[-2000:]}"

    alert = prometheus.wait_for("DbguardianBackupTooOld firing", too_old, context=diagnosis)
    assert alert["labels"] == {
        "alertname": "DbguardianBackupTooOld",
        "severity": "critical",
        "job": "dbguardian",
        "instance": f"127.0.0.1:{port}",
        "target": "app",
    }
    annotations = alert["annotations"]
    assert annotations["summary"] == "dbguardian: no recent backup of target app"
    # The daemon's verdict fired it (the backup is seconds old, far from the 26h fallback), and the description
    # was rendered from live queries: the CLI backup's tier, its storage, the failing check.
    assert 'health check "stale": failing.' in annotations["description"]
    assert "Newest success by tier: manual " in annotations["description"]
    assert "manual/local " in annotations["description"]
    assert "`dbguardian check app`" in annotations["runbook"]

    # What the alert stands on, as Prometheus sees it.
    stale = prometheus.query('dbguardian_health_check_ok{job="dbguardian", target="app", check="stale"}')
    assert [sample["value"][1] for sample in stale] == ["0"]
    assert [sample["value"][1] for sample in prometheus.query('up{job="dbguardian"}')] == ["1"]
    fresh = prometheus.query('time() - dbguardian_backup_last_success_timestamp_seconds{target="app", tier="manual"}')
    assert len(fresh) == 1 and float(fresh[0]["value"][1]) < 26 * 3600

    # The daemon is up, nothing failed, was missed or was rejected: those alerts are not active at all (every
    # `for` is 0s here, so pending would be firing). (DbguardianHealthCheckFailing may fire: one small backup is
    # below the health defaults min_count and min_size.)
    active = {a["labels"]["alertname"]: a["state"] for a in prometheus.alerts()}
    for quiet in (
        "DbguardianDaemonDown",
        "DbguardianLastBackupFailed",
        "DbguardianStorageUnreachable",
        "DbguardianIntegrityFailure",
        "DbguardianMissedRuns",
        "DbguardianPolicyReloadFailed",
        "DbguardianHealthChecksNotRunning",
        # A target without `wal:` exports no WAL metric or verdict: the WAL alerts stay out of it.
        "DbguardianWalArchivingStale",
        "DbguardianWalBacklog",
        "DbguardianWalShipFailing",
        "DbguardianArchiverFailing",
        "DbguardianWalGap",
        "DbguardianBaseBackupTooOld",
    ):
        assert quiet not in active, active
    for active_alert in prometheus.alerts():  # templates that fail render as "<error expanding template: ...>"
        assert "error expanding template" not in json.dumps(active_alert["annotations"]), active_alert

    # Every shipped rule evaluated without error against the daemon's real metrics.
    groups = prometheus.api("rules", type="alert")["data"]["groups"]
    evaluated = {rule["name"]: (rule["health"], rule.get("lastError", "")) for group in groups for rule in group["rules"]}
    assert len(evaluated) == len(yaml.safe_load(RULES.read_text())["groups"][0]["rules"])
    assert all(health == ("ok", "") for health in evaluated.values()), evaluated

    # Every dashboard query runs (the variables as Grafana sends "All"), and the main panels have data.
    results: dict[str, list[dict[str, Any]]] = {}
    for title, ref, expr in dashboard_queries():
        answer = prometheus.api("query", query=expr)
        assert answer["status"] == "success", (title, ref, expr, answer)
        results[f"{title} {ref}"] = answer["data"]["result"]
    assert {sample["metric"]["target"] for sample in results["Newest backup age A"]} == {"app"}
    assert {s["metric"]["check"] for s in results["Health checks A"] if s["metric"]["target"] == "app"} >= {"stale"}
    assert {s["metric"]["job_id"] for s in results["Next runs A"]} == {"backup:app:daily", "health:app", "drill:app"}
    assert float(results["Failing health checks A"][0]["value"][1]) >= 1
    # The WAL row's queries run too; without a `wal:` target they have nothing to show.
    assert results["Recovery point (RPO) A"] == [] and results["WAL ship duration A"] == []
    # ...and the variables offer the target and its tiers.
    for name, expected in {"target": "app", "tier": "daily"}.items():
        selector, label = variable_selectors()[name]
        answer = prometheus.api(f"label/{label}/values", **{"match[]": selector})
        assert answer["status"] == "success" and expected in answer["data"], (name, answer)

    prometheus.stop()
    assert daemon.stop() == 0


def test_wal_rules_and_panels_on_a_real_wal_target(
    wal_cluster: WalCluster,
    tmp_path: Path,
    daemons: list[DaemonProcess],
    prometheus_servers: list[PrometheusServer],
) -> None:
    """A target with `wal:` and a physical tier but no base backup yet: the daemon's real `base_stale` verdict
    fires DbguardianBaseBackupTooOld, PostgreSQL's archiver works (DbguardianArchiverFailing stays out), every WAL
    rule evaluates and the WAL row's queries find the target."""
    port = free_port()
    policy = wal_cluster.policy(tmp_path)
    document = yaml.safe_load(policy.read_text())
    document.update(metrics={"listen": f"127.0.0.1:{port}"}, catch_up=False, health={"every": "1s"})
    policy.write_text(yaml.safe_dump(document, sort_keys=False))
    wal_cluster.wait_archived(wal_cluster.switch_wal())  # a real segment in the spool (or shipped, with a shipper)
    daemon = DaemonProcess(policy, port)
    daemons.append(daemon)
    daemon.wait_ready()

    prometheus = PrometheusServer(tmp_path, rules_without_waiting(tmp_path), port)
    prometheus_servers.append(prometheus)
    prometheus.wait_for("prometheus ready", lambda: prometheus.get("/-/ready")[0] == 200)

    def firing(name: str) -> dict[str, Any] | None:
        for alert in prometheus.alerts():
            if alert["labels"]["alertname"] == name and alert["state"] == "firing":
                return alert
        return None

    def diagnosis() -> str:
        alerts = json.dumps(prometheus.alerts(), indent=1)[-3000:]
        return f"alerts: {alerts}\ndaemon log: {daemon.log_path.read_text()[-2000:]}"

    alert = prometheus.wait_for(
        "DbguardianBaseBackupTooOld firing", lambda: firing("DbguardianBaseBackupTooOld"), context=diagnosis
    )
    assert alert["labels"] == {
        "alertname": "DbguardianBaseBackupTooOld",
        "severity": "warning",
        "job": "dbguardian",
        "instance": f"127.0.0.1:{port}",
        "target": "app",
    }
    assert alert["annotations"]["summary"] == "dbguardian: no recent base backup of target app"
    assert "`dbguardian backup app --physical`" in alert["annotations"]["runbook"]

    # The daemon judged the real pg_stat_archiver: no failure, so that alert is not active at all.
    def wal_verdicts() -> dict[str, str] | None:
        samples = prometheus.query('dbguardian_health_check_ok{target="app"}')
        verdicts = {sample["metric"]["check"]: sample["value"][1] for sample in samples}
        return verdicts if set(WAL_CHECKS) <= set(verdicts) else None

    checks = prometheus.wait_for("every WAL verdict scraped", wal_verdicts, context=diagnosis)
    assert checks["archiver_failing"] == "1" and checks["base_stale"] == "0", checks
    active = {a["labels"]["alertname"] for a in prometheus.alerts()}
    assert "DbguardianArchiverFailing" not in active and "DbguardianWalShipFailing" not in active, active
    for active_alert in prometheus.alerts():
        assert "error expanding template" not in json.dumps(active_alert["annotations"]), active_alert

    groups = prometheus.api("rules", type="alert")["data"]["groups"]
    evaluated = {rule["name"]: (rule["health"], rule.get("lastError", "")) for group in groups for rule in group["rules"]}
    assert all(health == ("ok", "") for health in evaluated.values()), evaluated

    # The WAL row: the spool gauges of the health job (and the shipper, when one runs) reach the panels.
    results = {
        f"{title} {ref}": prometheus.api("query", query=expr)["data"]["result"] for title, ref, expr in dashboard_queries()
    }
    assert {sample["metric"]["target"] for sample in results["WAL spool A"]} == {"app"}
    assert {sample["metric"]["target"] for sample in results["WAL waiting in the spool A"]} == {"app"}

    prometheus.stop()
    assert daemon.stop() == 0
