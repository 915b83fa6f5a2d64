"""The table of job kinds: a new kind is one module exposing a :class:`JobKind` plus one entry here.

``job_specs(policy)`` is the daemon's job table: every kind asked for its specs.
"""

from __future__ import annotations

from collections.abc import Mapping

from dbguardian.jobs import backup, drill, health, prune, schema_drift, verify, wal_check, wal_ship
from dbguardian.jobs.outcome import JobKind
from dbguardian.policy import Policy
from dbguardian.schedule import JobSpec

KINDS: Mapping[str, JobKind] = {
    module.KIND.name: module.KIND for module in (backup, prune, health, drill, verify, wal_ship, wal_check, schema_drift)
}


def job_specs(policy: Policy) -> list[JobSpec]:
    """Every job the policy asks for, sorted by id: a backup job per target and schedule tier; per
    target a health job, a restore drill (unless disabled) and a verify job (if configured); a WAL
    shipper per target with ``wal:``; and the jobs of any other registered kind."""
    return sorted((spec for kind in KINDS.values() for spec in kind.specs(policy)), key=lambda spec: spec.id)
