"""Health verdicts: pure functions of catalog facts, probe results and ``now``.

Each check yields one :class:`Verdict` per target: ok or not, what was seen, what was expected.
The alert state machine (``alerts/state.py``) turns verdicts into notifications.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dbguardian.policy import HealthRules
from dbguardian.policy.target import SAFETY_TIER
from dbguardian.units import format_duration, format_size

CHECKS = (
    "stale",
    "too_small",
    "shrunk",
    "too_few",
    "storage_unreachable",
    "integrity",
    "database_unreachable",
    "last_attempt_failed",
    "missed_run",
)

RUNBOOK = {
    "stale": "Check `dbguardian plan` and the daemon log for failing or missed backup jobs; run `dbguardian backup TARGET`.",
    "too_small": "Compare with earlier backups (`dbguardian list TARGET`); did pg_dump lose access to tables?",
    "shrunk": "A dump much smaller than usual: check for dropped tables or permission changes before data is lost.",
    "too_few": "Fewer valid backups than required: check retention settings and failed runs.",
    "storage_unreachable": "Check credentials, network and free space of the storage; `dbguardian check TARGET`.",
    "integrity": "A stored object no longer matches its checksum: take a new backup now and investigate the storage.",
    "database_unreachable": "The database refuses or drops connections: check the server, network and credentials.",
    "last_attempt_failed": "Read the error in the daemon log; fix it and run `dbguardian backup TARGET`.",
    "missed_run": "A scheduled backup did not run: is the daemon running and the scheduler alive (`/readyz`)?",
    "drill": "Read the drill report (`dbguardian drill history`); restore the backup by hand to see what fails.",
    "verify": "A stored object differs from its manifest: take a new backup and investigate the storage.",
    "schema_drift": "The live schema differs from the committed schema file: `dbguardian schema diff TARGET --against "
    "FILE` shows how; apply the missing migration, or commit the new `schema dump` if the change was intended.",
    "policy_reload": "The policy file on disk is invalid; the daemon keeps the old one. Fix it (`dbguardian check-policy`).",
    # WAL archiving (walhealth.py)
    "wal_stale": "WAL is not reaching this storage: `dbguardian wal status TARGET`; "
    "is the daemon's shipper running, the storage reachable?",
    "wal_backlog": "The spool grows: a storage is down or the shipper is behind (`dbguardian wal status`). "
    "Never delete spool files by hand.",
    "archiver_failing": "PostgreSQL cannot archive into the spool: read the server log (archive_library / "
    "archive_command), check the spool's free space and permissions.",
    "wal_gap": "A WAL segment is missing from the archive: recovery cannot pass it. "
    "Take a base backup now (`dbguardian backup TARGET --physical`).",
    "wal_ship": "A storage refuses WAL, or a stored object differs from the spool file of that name: see the daemon "
    "log (wal_ship) and `dbguardian wal status TARGET`; never delete spool files by hand.",
    "base_stale": "No recent base backup: check the physical tier's runs (`dbguardian plan`, daemon log); "
    "`dbguardian backup TARGET --physical`.",
    "chain_broken": "An incremental base backup lacks a backup it is based on (`dbguardian list TARGET`): take a full "
    "base backup now (`dbguardian backup TARGET --physical`); find what removed the link (a manual delete, a storage).",
}


@dataclass(frozen=True)
class BackupFact:
    id: str
    tier: str
    started_at: datetime
    size_bytes: int
    storages: tuple[str, ...]
    kind: str = "logical"
    """Sizes are compared within one kind: a base backup is not a shrunk or grown dump."""
    incremental: bool = False
    """An incremental base backup: its size is what changed, not the database's, so size checks skip it."""


@dataclass(frozen=True)
class TargetFacts:
    """Everything the checks look at, gathered by ``jobs/health.py``."""

    backups: Sequence[BackupFact]
    storages: Sequence[str]
    storage_errors: Mapping[str, str] = field(default_factory=dict)
    integrity_errors: Mapping[str, str] = field(default_factory=dict)
    integrity_checked: Sequence[str] = ()
    db_consecutive_failures: int = 0
    db_error: str | None = None
    last_attempt: Mapping[str, object] | None = None
    missed: Sequence[str] = ()


@dataclass(frozen=True)
class Verdict:
    target: str
    check: str
    ok: bool
    observed: str
    expected: str

    @property
    def runbook(self) -> str:
        return RUNBOOK.get(self.check, "See docs/runbook.md in the dbguardian repository.")


def _age(now: datetime, moment: datetime) -> str:
    return format_duration(timedelta(seconds=int((now - moment).total_seconds())))


def evaluate(target: str, facts: TargetFacts, rules: HealthRules, now: datetime) -> list[Verdict]:
    """All checks for one target, in :data:`CHECKS` order."""
    regular = sorted((b for b in facts.backups if b.tier != SAFETY_TIER), key=lambda b: (b.started_at, b.id), reverse=True)
    verdicts: list[Verdict] = []

    def add(check: str, ok: bool, observed: str, expected: str) -> None:
        verdicts.append(Verdict(target, check, ok, observed, expected))

    # stale: the newest valid backup on every storage is younger than max_age
    stale = []
    for storage in facts.storages:
        newest = next((b for b in regular if storage in b.storages), None)
        if newest is None:
            stale.append(f"no valid backup on {storage}")
        elif now - newest.started_at > rules.max_age:
            stale.append(f"newest backup on {storage} is {_age(now, newest.started_at)} old ({newest.id})")
    newest_overall = regular[0] if regular else None
    add(
        "stale",
        not stale,
        "; ".join(stale) if stale else f"newest backup is {_age(now, newest_overall.started_at)} old"
        if newest_overall else "no backups",
        f"a valid backup younger than {format_duration(rules.max_age)} on every storage",
    )  # fmt: skip

    # too_small / shrunk: the newest backup against an absolute floor and its predecessors (an incremental
    # base backup holds only what changed: the newest whole backup is judged instead)
    whole = [b for b in regular if not b.incremental]
    newest_whole = whole[0] if whole else None
    if newest_whole is None:
        add("too_small", True, "no backups yet", f"at least {format_size(rules.min_size)}")
        add("shrunk", True, "no backups yet", f"at least {rules.shrink_ratio:.0%} of the median of the previous five")
    else:
        size = newest_whole.size_bytes
        add("too_small", size >= rules.min_size, f"newest backup {newest_whole.id} is {format_size(size)}",
            f"at least {format_size(rules.min_size)}")  # fmt: skip
        previous = [b.size_bytes for b in whole[1:] if b.kind == newest_whole.kind][:5]
        if previous:
            median = statistics.median(previous)
            ok = size >= rules.shrink_ratio * median
            observed = f"newest backup is {format_size(size)}, {size / median:.0%} of the median {format_size(int(median))}"
        else:
            ok, observed = True, "no earlier backups to compare with"
        add("shrunk", ok, observed, f"at least {rules.shrink_ratio:.0%} of the median of the previous five")

    add("too_few", len(regular) >= rules.min_count, f"{len(regular)} valid backup(s)", f"at least {rules.min_count}")

    unreachable = [f"{name}: {error}" for name, error in sorted(facts.storage_errors.items())]
    add("storage_unreachable", not unreachable, "; ".join(unreachable) or "all storages answered the probe",
        "every storage lists, writes, reads back and deletes a probe object")  # fmt: skip

    corrupt = [f"{name}: {error}" for name, error in sorted(facts.integrity_errors.items())]
    checked = ", ".join(facts.integrity_checked) or "nothing to check"
    add("integrity", not corrupt, "; ".join(corrupt) or f"checksums match ({checked})",
        "the newest backup's stored objects match the manifest's sha256")  # fmt: skip

    failures = facts.db_consecutive_failures
    add("database_unreachable", failures < rules.db_failures,
        f"{failures} consecutive failed connection(s)" + (f": {facts.db_error}" if facts.db_error else ""),
        f"fewer than {rules.db_failures} consecutive failures")  # fmt: skip

    attempt = facts.last_attempt
    if attempt is None:
        add("last_attempt_failed", True, "no attempt recorded yet", "the latest backup attempt succeeded")
    else:
        ok = attempt.get("result") == "success"
        observed = f"latest attempt ({attempt.get('tier')}, {attempt.get('at')}) {attempt.get('result')}"
        if not ok and attempt.get("error"):
            observed += f": {attempt.get('error')}"
        add("last_attempt_failed", ok, observed, "the latest backup attempt succeeded")

    add("missed_run", not facts.missed, "; ".join(facts.missed) or "no scheduled run missed",
        "every scheduled run happened")  # fmt: skip
    return verdicts
