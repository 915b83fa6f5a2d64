"""Health verdicts and the alert state machine (pure, table-tested)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbguardian.alerts.state import AlertState, step
from dbguardian.health import CHECKS, BackupFact, TargetFacts, Verdict, evaluate
from dbguardian.policy import HEALTH_DEFAULTS

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MB = 1024 * 1024


def fact(hours: float, size: int = 5 * MB, storages: tuple[str, ...] = ("local",), tier: str = "daily") -> BackupFact:
    moment = NOW - timedelta(hours=hours)
    return BackupFact(f"id-{hours}", tier, moment, size, storages)


def verdicts(facts: TargetFacts) -> dict[str, Verdict]:
    return {v.check: v for v in evaluate("app", facts, HEALTH_DEFAULTS, NOW)}


def test_healthy_target_passes_every_check() -> None:
    facts = TargetFacts(backups=[fact(1), fact(25), fact(49)], storages=["local"],
                        last_attempt={"result": "success", "tier": "daily", "at": "x"})  # fmt: skip
    result = verdicts(facts)
    assert list(result) == list(CHECKS)
    assert all(v.ok for v in result.values()), [v for v in result.values() if not v.ok]


@pytest.mark.parametrize(
    ("facts", "check", "observed"),
    [
        (TargetFacts(backups=[fact(27), fact(50)], storages=["local"]), "stale",
         "newest backup on local is 1d3h old (id-27)"),
        (TargetFacts(backups=[fact(1), fact(2)], storages=["local", "offsite"]), "stale",
         "no valid backup on offsite"),
        (TargetFacts(backups=[fact(1, size=900_000), fact(25, size=1_000_000)], storages=["local"]), "too_small",
         "newest backup id-1 is 878.9 KiB"),
        (TargetFacts(backups=[fact(1, size=2 * MB)] + [fact(24 * n, size=10 * MB) for n in range(1, 7)],
                     storages=["local"]), "shrunk", "newest backup is 2.0 MiB, 20% of the median 10.0 MiB"),
        (TargetFacts(backups=[fact(1)], storages=["local"]), "too_few", "1 valid backup(s)"),
        (TargetFacts(backups=[fact(1), fact(2)], storages=["local"], storage_errors={"local": "permission denied"}),
         "storage_unreachable", "local: permission denied"),
        (TargetFacts(backups=[fact(1), fact(2)], storages=["local"], integrity_errors={"local": "sha256 differs"}),
         "integrity", "local: sha256 differs"),
        (TargetFacts(backups=[fact(1), fact(2)], storages=["local"], db_consecutive_failures=2, db_error="refused"),
         "database_unreachable", "2 consecutive failed connection(s): refused"),
        (TargetFacts(backups=[fact(1), fact(2)], storages=["local"],
                     last_attempt={"result": "failure", "tier": "daily", "at": "T", "error": "boom"}),
         "last_attempt_failed", "latest attempt (daily, T) failure: boom"),
        (TargetFacts(backups=[fact(1), fact(2)], storages=["local"], missed=["backup:app:weekly missed"]),
         "missed_run", "backup:app:weekly missed"),
    ],
)  # fmt: skip
def test_each_check_fails_alone(facts: TargetFacts, check: str, observed: str) -> None:
    result = verdicts(facts)
    failing = [name for name, verdict in result.items() if not verdict.ok]
    assert failing == [check]
    assert result[check].observed == observed
    assert result[check].runbook


def test_one_db_failure_is_tolerated_and_safety_backups_do_not_count() -> None:
    facts = TargetFacts(backups=[fact(1), fact(2), fact(0.5, tier="safety", size=1)], storages=["local"],
                        db_consecutive_failures=1)  # fmt: skip
    assert all(v.ok for v in verdicts(facts).values())


RENOTIFY = timedelta(hours=24)


def test_alert_lifecycle() -> None:
    state = AlertState()
    state, action = step(state, True, NOW, RENOTIFY)
    assert action is None
    state, action = step(state, False, NOW, RENOTIFY)
    assert action == "firing" and state.since == NOW
    state, action = step(state, False, NOW + timedelta(hours=6), RENOTIFY)
    assert action is None
    state, action = step(state, False, NOW + timedelta(hours=24), RENOTIFY)
    assert action == "reminder" and state.since == NOW
    state, action = step(state, False, NOW + timedelta(hours=30), RENOTIFY)
    assert action is None
    state, action = step(state, True, NOW + timedelta(hours=31), RENOTIFY)
    assert action == "resolved" and not state.firing
    state, action = step(state, True, NOW + timedelta(hours=32), RENOTIFY)
    assert action is None


@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=100)), max_size=60))
def test_alerts_alternate_firing_and_resolved(sequence: list[tuple[bool, int]]) -> None:
    """Whatever the verdicts, 'firing' and 'resolved' alternate, starting with 'firing'."""
    state = AlertState()
    moment = NOW
    sent: list[str] = []
    for ok, hours in sequence:
        moment += timedelta(hours=hours)
        state, action = step(state, ok, moment, RENOTIFY)
        if action in ("firing", "resolved"):
            sent.append(action)
        if action == "reminder":
            assert sent and sent[-1] == "firing"
    assert all(a != b for a, b in itertools.pairwise(sent))
    assert not sent or sent[0] == "firing"


def test_sizes_are_compared_within_one_backup_kind() -> None:
    # Five big base backups before a small daily dump: the dump is compared with dumps only.
    bases = [replace(fact(10 + i, size=500 * MB), kind="physical", tier="base") for i in range(5)]
    dumps = [fact(2, size=5 * MB), fact(26, size=5 * MB)]
    result = verdicts(TargetFacts(backups=[fact(1, size=5 * MB), *dumps, *bases], storages=["local"]))
    assert result["shrunk"].ok, result["shrunk"].observed
    assert "median 5.0 MiB" in result["shrunk"].observed


def test_an_incremental_base_backup_is_not_judged_by_its_size() -> None:
    # It holds what changed since the backup before it: tiny is normal. The newest whole backup is judged.
    fulls = [replace(fact(30 + i, size=500 * MB), kind="physical", tier="base") for i in range(3)]
    incremental = replace(fact(1, size=40 * 1024), kind="physical", tier="incr", incremental=True)
    result = verdicts(TargetFacts(backups=[incremental, *fulls], storages=["local"]))
    assert result["too_small"].ok and result["shrunk"].ok, (result["too_small"], result["shrunk"])
    assert result["too_small"].observed == f"newest backup {fulls[0].id} is 500.0 MiB"
    # A full one that shrank is still caught, incrementals in between or not.
    shrunk_full = replace(fact(0.5, size=50 * MB), kind="physical", tier="base")
    assert not verdicts(TargetFacts(backups=[shrunk_full, incremental, *fulls], storages=["local"]))["shrunk"].ok
