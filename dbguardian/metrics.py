"""Every Prometheus metric dbguardian exports, defined in one place (documented in docs/reference/metrics.md,
which tests/unit/test_docs.py keeps in step with this module).

One registry per daemon (not the process-global default), so tests can build several.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from dbguardian import __version__
from dbguardian.cleanup import cleanup_failures

if TYPE_CHECKING:
    from dbguardian.jobs.outcome import Observation


class CleanupFailures(Collector):
    """``dbguardian_cleanup_failures_total{what}``: read at scrape time from :mod:`dbguardian.cleanup`,
    where the layers below the daemon count them (they cannot reach the daemon's registry)."""

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "dbguardian_cleanup_failures",
            "Best-effort clean-ups that failed and left something behind (a staging database, objects of a failed run).",
            labels=["what"],
        )
        for what, count in cleanup_failures().items():
            family.add_metric([what], count)
        yield family


DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.build_info = Gauge(
            "dbguardian_build_info", "Always 1; labels carry the version.", ["version", "python"], registry=registry
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.last_success = Gauge(
            "dbguardian_backup_last_success_timestamp_seconds",
            "Start time of the newest valid backup (from the catalog at start, then from each run).",
            ["target", "tier"],
            registry=registry,
        )
        self.last_attempt = Gauge(
            "dbguardian_backup_last_attempt_timestamp_seconds",
            "When the last backup attempt of this target and tier started.",
            ["target", "tier"],
            registry=registry,
        )
        self.duration = Histogram(
            "dbguardian_backup_duration_seconds",
            "Duration of backup runs (successful or not).",
            ["target", "tier"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.last_stored_bytes = Gauge(
            "dbguardian_backup_last_stored_bytes",
            "Stored (compressed) size of the last successful backup.",
            ["target", "tier"],
            registry=registry,
        )
        self.last_raw_bytes = Gauge(
            "dbguardian_backup_last_raw_bytes",
            "Uncompressed pg_dump size of the last successful backup.",
            ["target", "tier"],
            registry=registry,
        )
        self.runs = Counter(
            "dbguardian_backup_runs_total",
            "Backup runs by result (success, partial: failed on some storages, failure, cancelled).",
            ["target", "tier", "result"],
            registry=registry,
        )
        self.next_run = Gauge(
            "dbguardian_job_next_run_timestamp_seconds",
            "When each scheduled job runs next.",
            ["job_id", "kind", "target", "tier"],
            registry=registry,
        )
        self.missed_runs = Counter(
            "dbguardian_missed_runs_total",
            "Scheduled runs missed (caught up at start, or skipped as too late).",
            ["target", "tier"],
            registry=registry,
        )
        self.reloads = Counter(
            "dbguardian_policy_reloads_total", "Policy reloads (SIGHUP) by result.", ["result"], registry=registry
        )
        self.last_reload_success = Gauge(
            "dbguardian_policy_last_reload_successful",
            "1 if the last policy reload succeeded (or none happened), 0 if it was rejected.",
            registry=registry,
        )
        self.last_reload_success.set(1)
        self.storage_failures = Counter(
            "dbguardian_storage_write_failures_total",
            "Backups that could not be written to a storage (the others still got them).",
            ["target", "storage"],
            registry=registry,
        )
        self.prune_runs = Counter(
            "dbguardian_prune_runs_total", "Retention runs by result.", ["target", "result"], registry=registry
        )
        self.pruned_backups = Counter(
            "dbguardian_pruned_backups_total",
            "Backups deleted by retention.",
            ["target", "storage"],
            registry=registry,
        )
        self.health_ok = Gauge(
            "dbguardian_health_check_ok", "1 if the health check passes, 0 if not.", ["target", "check"], registry=registry
        )
        self.backup_age = Gauge(
            "dbguardian_backup_age_seconds",
            "Age of the newest valid backup per target, tier and storage (at the last health check).",
            ["target", "tier", "storage"],
            registry=registry,
        )
        self.health_last_run = Gauge(
            "dbguardian_health_last_run_timestamp_seconds", "When the health checks last ran.", registry=registry
        )
        self.alerts_firing = Gauge("dbguardian_alerts_firing", "Alerts firing now.", registry=registry)
        self.alert_deliveries = Counter(
            "dbguardian_alert_deliveries_total",
            "Alert delivery attempts by channel and result.",
            ["channel", "result"],
            registry=registry,
        )
        self.pings = Counter(
            "dbguardian_pings_total", "Dead-man pings by event and result.", ["target", "event", "result"], registry=registry
        )
        self.drill_last_success = Gauge(
            "dbguardian_drill_last_success_timestamp_seconds", "When the last passing restore drill ran.", ["target"],
            registry=registry,
        )  # fmt: skip
        self.drill_last_result = Gauge(
            "dbguardian_drill_last_result", "1 if the last restore drill passed, 0 if not.", ["target"], registry=registry
        )
        self.drill_duration = Gauge(
            "dbguardian_drill_duration_seconds",
            "Phases of the last restore drill (fetch, restore, verify, total = measured recovery time).",
            ["target", "phase"],
            registry=registry,
        )
        self.verify_last_result = Gauge(
            "dbguardian_verify_last_result", "1 if every object passed the last verify, 0 if not.", ["target"],
            registry=registry,
        )  # fmt: skip
        self.schema_drift = Gauge(
            "dbguardian_schema_drift", "1 if the last schema check found the schema differs from its file, 0 if not.",
            ["target"], registry=registry,
        )  # fmt: skip
        # WAL archiving (point-in-time recovery).
        self.wal_last_archived = Gauge(
            "dbguardian_wal_last_archived_timestamp_seconds",
            "When the newest WAL file on the storage was archived (written there).",
            ["target", "storage"],
            registry=registry,
        )
        self.wal_segments_shipped = Counter(
            "dbguardian_wal_segments_shipped_total", "WAL files the shipper wrote to the storage.", ["target", "storage"],
            registry=registry,
        )  # fmt: skip
        self.wal_ship_failures = Counter(
            "dbguardian_wal_ship_failures_total",
            "Failed attempts to write a WAL file to the storage (it stays in the spool).",
            ["target", "storage"],
            registry=registry,
        )
        self.wal_ship_duration = Histogram(
            "dbguardian_wal_ship_duration_seconds",
            "Time to ship one WAL file to every storage of its target (read, compress, encrypt, write).",
            ["target"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.wal_spool_segments = Gauge(
            "dbguardian_wal_spool_segments", "WAL files waiting in the spool.", ["target"], registry=registry
        )
        self.wal_spool_bytes = Gauge(
            "dbguardian_wal_spool_bytes", "Bytes of WAL waiting in the spool.", ["target"], registry=registry
        )
        self.rpo = Gauge(
            "dbguardian_rpo_seconds",
            "Recovery point now: age of the newest WAL on the target's best storage (≤ archive_timeout if caught up).",
            ["target"],
            registry=registry,
        )
        self.drill_rpo = Gauge(
            "dbguardian_drill_rpo_seconds",
            "How far behind the source the data restored by the last PITR drill was (recovery point achieved).",
            ["target"],
            registry=registry,
        )
        self.running = Gauge("dbguardian_jobs_running", "Jobs running now.", ["kind"], registry=registry)
        self.jobs = Gauge("dbguardian_jobs", "Jobs in the job table.", ["kind"], registry=registry)
        self.job_leader = Gauge(
            "dbguardian_job_leader",
            "1 if this daemon runs the job (it leads the job's target), 0 if another daemon does (coordination).",
            ["job_id"],
            registry=registry,
        )
        registry.register(CleanupFailures())

    def set_next_runs(self, rows: Iterable[tuple[str, str, str, str, datetime | None]]) -> None:
        """Replace the next-run gauge with the job table's current rows (job, kind, target, tier, next)."""
        self.next_run.clear()
        for job, kind, target, tier, moment in rows:
            if moment is not None:
                self.next_run.labels(job, kind, target, tier).set(moment.timestamp())

    def render(self) -> bytes:
        return generate_latest(self.registry)


def apply_observation(metrics: Metrics, observation: Observation) -> None:
    """One job's report applied to the registry (the daemon's runner, and `check --textfile` once)."""
    metric = getattr(metrics, observation.metric)
    child = metric.labels(*observation.labels) if observation.labels else metric
    if observation.op == "set":
        child.set(observation.value)
    elif observation.op == "inc":
        child.inc(observation.value)
    elif observation.op == "dec":
        child.dec(observation.value)
    else:
        child.observe(observation.value)
