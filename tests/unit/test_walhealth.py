"""WAL archiving verdicts and the recovery point (walhealth.py), with ``now`` passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dbguardian.walhealth import (
    BASE_STALE_GRACE,
    WAL_CHECKS,
    ArchiverStats,
    SpoolState,
    StorageWal,
    WalFacts,
    archiver_failing,
    base_max_age,
    broken_chains,
    evaluate_wal,
    rpo,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
RPO = timedelta(minutes=5)
MAX_SPOOL = 1024**3
SEG = "000000010000000000000010"


def stats(**changes: object) -> ArchiverStats:
    values: dict[str, object] = {
        "archived_count": 10,
        "failed_count": 0,
        "last_archived_wal": SEG,
        "last_archived_time": NOW - timedelta(minutes=30),
        "last_failed_wal": None,
        "last_failed_time": None,
        "archive_timeout": timedelta(seconds=60),
    }
    values.update(changes)
    return ArchiverStats(**values)  # type: ignore[arg-type]


def storage(age: timedelta = timedelta(minutes=1), **changes: object) -> StorageWal:
    values: dict[str, object] = {"newest_segment": SEG, "newest_at": NOW - age, "holds_last_archived": True}
    values.update(changes)
    return StorageWal(**values)  # type: ignore[arg-type]


def facts(**changes: object) -> WalFacts:
    values: dict[str, object] = {
        "storages": {"local": storage(), "offsite": storage()},
        "spool": SpoolState(),
        "archiver": stats(),
        "newest_base_at": NOW - timedelta(days=2),
        "base_max_age": timedelta(days=7) + BASE_STALE_GRACE,
    }
    values.update(changes)
    return WalFacts(**values)  # type: ignore[arg-type]


def verdicts(wal_facts: WalFacts) -> dict[str, tuple[bool, str]]:
    return {v.check: (v.ok, v.observed) for v in evaluate_wal("app", wal_facts, RPO, MAX_SPOOL, NOW)}


def failing(wal_facts: WalFacts) -> set[str]:
    return {check for check, (ok, _) in verdicts(wal_facts).items() if not ok}


def test_healthy_archive_passes_every_check_in_order() -> None:
    result = evaluate_wal("app", facts(), RPO, MAX_SPOOL, NOW)
    assert [v.check for v in result] == list(WAL_CHECKS)
    assert all(v.ok for v in result), result
    assert all(v.runbook and "docs/runbook" not in v.runbook for v in result)


def test_old_newest_segment_is_stale_when_the_storage_lacks_what_the_server_archived() -> None:
    old = storage(timedelta(minutes=20), holds_last_archived=False)
    assert failing(facts(storages={"local": storage(), "offsite": old})) == {"wal_stale"}
    assert "offsite: newest segment" in verdicts(facts(storages={"local": storage(), "offsite": old}))["wal_stale"][1]


def test_an_idle_server_is_not_stale_while_every_storage_is_caught_up() -> None:
    idle = storage(timedelta(hours=5))
    assert failing(facts(storages={"local": idle})) == set()
    assert "caught up" in verdicts(facts(storages={"local": idle}))["wal_stale"][1]


def test_caught_up_needs_an_empty_spool_and_no_archiver_failure() -> None:
    idle = {"local": storage(timedelta(hours=5))}
    waiting = SpoolState(files=1, bytes=16 << 20, oldest_at=NOW - timedelta(minutes=1), oldest_name=SEG)
    assert "wal_stale" in failing(facts(storages=idle, spool=waiting))
    broken = stats(last_failed_time=NOW - timedelta(minutes=1), last_failed_wal=SEG)
    assert {"wal_stale", "archiver_failing"} <= failing(facts(storages=idle, archiver=broken))
    assert "wal_stale" in failing(facts(storages=idle, archiver=None))


def test_unlisted_or_empty_storage_is_stale() -> None:
    result = verdicts(facts(storages={"local": storage(), "s3": StorageWal(error="connection refused")}))
    assert result["wal_stale"] == (False, "s3: cannot list WAL: connection refused")
    assert verdicts(facts(storages={"local": StorageWal()}))["wal_stale"] == (False, "local: no WAL archived")


def test_backlog_by_bytes_and_by_age_of_the_oldest_file() -> None:
    big = SpoolState(files=70, bytes=MAX_SPOOL + 1, oldest_at=NOW - timedelta(minutes=1), oldest_name=SEG)
    old = SpoolState(files=1, bytes=16 << 20, oldest_at=NOW - timedelta(minutes=6), oldest_name=SEG)
    fine = SpoolState(files=2, bytes=32 << 20, oldest_at=NOW - timedelta(minutes=4), oldest_name=SEG)
    assert "wal_backlog" in failing(facts(spool=big))
    assert "waits for 6m" in verdicts(facts(spool=old))["wal_backlog"][1]
    assert "wal_backlog" not in failing(facts(spool=fine))


def test_archiver_failing_only_when_a_failure_is_newer_than_the_last_success() -> None:
    assert not archiver_failing(stats())
    assert not archiver_failing(stats(last_failed_time=NOW - timedelta(hours=1), failed_count=3))
    assert archiver_failing(stats(last_failed_time=NOW - timedelta(minutes=1), failed_count=3))
    assert archiver_failing(stats(last_archived_time=None, last_archived_wal=None, last_failed_time=NOW))
    result = verdicts(facts(archiver=stats(last_failed_time=NOW, last_failed_wal=SEG, failed_count=2)))
    assert result["archiver_failing"][0] is False
    assert "2 failure(s)" in result["archiver_failing"][1]


def test_gap_names_the_storage_and_the_missing_segments() -> None:
    holey = storage(gaps=("000000010000000000000003",), gap_count=1)
    result = verdicts(facts(storages={"local": storage(), "offsite": holey}))
    assert result["wal_gap"] == (False, "offsite: 1 missing segment(s) from 000000010000000000000003")


def test_base_stale_against_the_tier_period() -> None:
    allowed = timedelta(days=7) + BASE_STALE_GRACE
    assert "base_stale" in failing(facts(newest_base_at=NOW - allowed - timedelta(seconds=1)))
    assert "base_stale" not in failing(facts(newest_base_at=NOW - allowed))
    assert "base_stale" in failing(facts(newest_base_at=None))
    assert "base_stale" not in failing(facts(newest_base_at=None, base_max_age=None))
    assert base_max_age([timedelta(days=7), timedelta(days=1)]) == timedelta(days=1) + BASE_STALE_GRACE
    assert base_max_age([]) is None


def test_rpo_is_the_best_storage_bounded_by_archive_timeout_when_caught_up() -> None:
    behind = storage(timedelta(minutes=20), holds_last_archived=False)
    assert rpo(facts(storages={"a": behind}), NOW) == timedelta(minutes=20)
    assert rpo(facts(storages={"a": behind, "b": storage(timedelta(minutes=3))}), NOW) == timedelta(seconds=60)
    assert rpo(facts(storages={"a": StorageWal()}), NOW) is None
    no_timeout = facts(storages={"a": storage(timedelta(minutes=3))}, archiver=stats(archive_timeout=timedelta(0)))
    assert rpo(no_timeout, NOW) == timedelta(minutes=3)


@given(
    ages=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=4),
    held=st.lists(st.booleans(), min_size=4, max_size=4),
    spool_files=st.integers(min_value=0, max_value=3),
)
def test_rpo_never_exceeds_the_youngest_storage_and_is_never_negative(
    ages: list[int], held: list[bool], spool_files: int
) -> None:
    stores = {f"s{i}": storage(timedelta(seconds=age), holds_last_archived=held[i]) for i, age in enumerate(ages)}
    value = rpo(facts(storages=stores, spool=SpoolState(files=spool_files)), NOW)
    assert value is not None
    assert timedelta(0) <= value <= timedelta(seconds=min(ages))
    if spool_files:  # nothing is caught up while files wait: the RPO is the plain age
        assert value == timedelta(seconds=min(ages))


def test_chain_broken_names_the_storage_the_incremental_and_the_missing_link() -> None:
    parents: dict[str, str | None] = {"full": None, "i1": "full", "i2": "i1", "lost": "gone"}
    assert broken_chains(parents) == ["lost (needs gone)"]
    assert broken_chains({k: v for k, v in parents.items() if k != "i1"}) == ["i2 (needs i1)", "lost (needs gone)"]
    assert broken_chains({"full": None, "i1": "full"}) == []
    broken = facts(storages={"local": storage(), "offsite": storage(broken_chains=("i2 (needs i1)",))})
    assert failing(broken) == {"chain_broken"}
    assert verdicts(broken)["chain_broken"] == (False, "offsite: i2 (needs i1)")
    assert "chain_broken" not in failing(facts())
