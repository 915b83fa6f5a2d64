"""Retention decisions: tables, a simulated year of GFS backups, and property tests of the invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.catalog import new_backup_id
from dbguardian.retention import BackupFacts, Decision, Rules, plan

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def facts(tier: str, age: timedelta, target: str = "app") -> BackupFacts:
    moment = NOW - age
    return BackupFacts(new_backup_id(moment), target, tier, moment)


def deleted(decisions: list[Decision]) -> list[str]:
    return [d.backup_id for d in decisions if d.delete]


def test_keep_per_tier_with_reasons() -> None:
    dailies = [facts("daily", timedelta(days=n)) for n in range(10)]
    decisions = plan(dailies, "app", "local", Rules({"daily": 7}, min_keep=2), NOW)
    assert [d.delete for d in decisions] == [False] * 7 + [True] * 3
    assert decisions[0].reason == "kept: newest valid backup"
    assert decisions[1].reason == "kept: within min_keep 2"
    assert decisions[2].reason == "kept: within keep 7 of tier daily"
    assert decisions[7].reason == "beyond keep 7 of tier daily (number 8 newest)"


def test_max_age_and_min_keep() -> None:
    old = [facts("manual", timedelta(days=40 + n)) for n in range(5)]
    decisions = plan(old, "app", "local", Rules({}, max_age=timedelta(days=30), min_keep=3), NOW)
    assert [d.delete for d in decisions] == [False, False, False, True, True]
    assert decisions[3].reason == "older than max_age 4w2d (age 6w1d)"


def test_nothing_deleted_after_a_failed_attempt() -> None:
    dailies = [facts("daily", timedelta(days=n)) for n in range(10)]
    decisions = plan(dailies, "app", "local", Rules({"daily": 2}), NOW, last_attempt_failed=True)
    assert deleted(decisions) == []
    assert {d.reason for d in decisions} == {"kept: the latest backup attempt failed, nothing is deleted until one succeeds"}


def test_other_targets_untouched() -> None:
    mixed = [facts("daily", timedelta(days=n), target="other") for n in range(10)] + [facts("daily", timedelta(days=1))]
    decisions = plan(mixed, "app", "local", Rules({"daily": 1}), NOW)
    assert [(d.target, d.delete) for d in decisions] == [("app", False)]


def test_tiers_are_counted_separately() -> None:
    backups = [facts("daily", timedelta(days=n)) for n in range(3)] + [
        facts("weekly", timedelta(days=7 * n)) for n in range(1, 4)
    ]
    decisions = plan(backups, "app", "local", Rules({"daily": 1, "weekly": 2}), NOW)
    by_tier = {(d.tier, d.delete) for d in decisions}
    assert sorted(deleted(decisions)) == sorted(
        [b.id for b in backups if b.tier == "daily" and b.started_at < NOW] + [backups[-1].id]
    )
    assert ("weekly", False) in by_tier


def test_simulated_year_of_gfs_backups() -> None:
    """daily 02:00 keep 7, weekly Sunday 03:00 keep 4, monthly 1st 04:00 keep 12; prune after every backup."""
    rules = Rules({"daily": 7, "weekly": 4, "monthly": 12}, min_keep=2)
    kept: list[BackupFacts] = []
    day = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2027, 1, 1, tzinfo=UTC)
    total = 0
    while day < end:
        runs = [("daily", day.replace(hour=2))]
        if day.weekday() == 6:
            runs.append(("weekly", day.replace(hour=3)))
        if day.day == 1:
            runs.append(("monthly", day.replace(hour=4)))
        for tier, moment in runs:
            kept.append(BackupFacts(new_backup_id(moment), "app", tier, moment))
            total += 1
            decisions = plan(kept, "app", "local", rules, moment + timedelta(minutes=30))
            gone = set(deleted(decisions))
            kept = [b for b in kept if b.id not in gone]
        day += timedelta(days=1)
    assert total == 365 + 52 + 12
    by_tier: dict[str, list[datetime]] = {}
    for backup in kept:
        by_tier.setdefault(backup.tier, []).append(backup.started_at)
    assert len(by_tier["daily"]) == 7 and min(by_tier["daily"]) == datetime(2026, 12, 25, 2, tzinfo=UTC)
    assert len(by_tier["weekly"]) == 4 and min(by_tier["weekly"]) == datetime(2026, 12, 6, 3, tzinfo=UTC)
    assert len(by_tier["monthly"]) == 12 and min(by_tier["monthly"]) == datetime(2026, 1, 1, 4, tzinfo=UTC)


def test_per_storage_rules_differ() -> None:
    backups = [facts("daily", timedelta(days=n)) for n in range(20)]
    local = plan(backups, "app", "local", Rules({"daily": None}, max_age=timedelta(days=3)), NOW)
    offsite = plan(backups, "app", "offsite", Rules({"daily": None}, max_age=timedelta(days=365)), NOW)
    assert len(deleted(local)) == 16  # days 4..19 (day 3 is exactly 3 days old: not older)
    assert deleted(offsite) == []
    assert {d.storage for d in local} == {"local"}


backup_lists = st.lists(
    st.tuples(
        st.sampled_from(["daily", "weekly", "monthly", "manual", "safety"]),
        st.integers(min_value=0, max_value=400 * 24),  # age in hours
        st.sampled_from(["app", "app", "app", "other"]),
    ),
    max_size=60,
)
rules_strategy = st.builds(
    Rules,
    keep_by_tier=st.dictionaries(
        st.sampled_from(["daily", "weekly", "monthly", "manual"]), st.one_of(st.none(), st.integers(1, 10))
    ),
    max_age=st.one_of(st.none(), st.integers(1, 400 * 24).map(lambda h: timedelta(hours=h))),
    min_keep=st.integers(1, 8),
)


def build(entries: list[tuple[str, int, str]]) -> list[BackupFacts]:
    return [
        BackupFacts(new_backup_id(NOW - timedelta(hours=age), f"{index:04x}"), target, tier, NOW - timedelta(hours=age))
        for index, (tier, age, target) in enumerate(entries)
    ]


@settings(max_examples=300, deadline=None)
@given(backup_lists, rules_strategy, st.booleans())
def test_invariants(entries: list[tuple[str, int, str]], rules: Rules, failed: bool) -> None:
    backups = build(entries)
    decisions = plan(backups, "app", "s", rules, NOW, last_attempt_failed=failed)
    mine = [b for b in backups if b.target == "app"]
    # only this target, every backup of it exactly once
    assert sorted(d.backup_id for d in decisions) == sorted(b.id for b in mine)
    gone = set(deleted(decisions))
    if mine:
        newest = max(mine, key=lambda b: (b.started_at, b.id))
        assert newest.id not in gone
    assert len(mine) - len(gone) >= min(rules.min_keep, len(mine))
    if failed:
        assert not gone
    remaining = [b for b in backups if b.id not in gone]
    again = plan(remaining, "app", "s", rules, NOW, last_attempt_failed=failed)
    assert deleted(again) == []
    assert all(d.reason for d in decisions)


@pytest.mark.parametrize("min_keep", [1, 3])
def test_min_keep_protects_even_beyond_tier_keep(min_keep: int) -> None:
    backups = [facts("daily", timedelta(days=n)) for n in range(5)]
    decisions = plan(backups, "app", "local", Rules({"daily": 1}, min_keep=min_keep), NOW)
    assert len(deleted(decisions)) == 5 - min_keep


def test_a_full_backup_beyond_keep_stays_while_a_kept_incremental_is_based_on_it() -> None:
    full = facts("base", timedelta(days=8))
    first = BackupFacts(new_backup_id(NOW - timedelta(days=2), "a1"), "app", "incr", NOW - timedelta(days=2), full.id)
    second = BackupFacts(new_backup_id(NOW - timedelta(days=1), "a2"), "app", "incr", NOW - timedelta(days=1), first.id)
    newer_full = facts("base", timedelta(hours=1))
    decisions = {d.backup_id: d for d in plan([full, first, second, newer_full], "app", "local",
                                                Rules({"base": 1, "incr": 7}), NOW)}  # fmt: skip
    assert not decisions[full.id].delete
    assert decisions[full.id].reason == f"kept: incremental {first.id} is based on it"
    assert decisions[full.id].kept_for == first.id and decisions[first.id].kept_for is None
    # Once its incrementals expire, the chain goes with them.
    expired = plan([full, first, second, newer_full], "app", "local", Rules({"base": 1, "incr": 0}), NOW)
    assert set(deleted(expired)) == {full.id, first.id, second.id}


chain_lists = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=60 * 24),  # age in hours
        st.one_of(st.none(), st.integers(min_value=0, max_value=59)),  # parent: an older entry, or a full backup
        st.booleans(),  # the parent is missing from the storage (a broken chain)
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(chain_lists, rules_strategy.map(lambda r: Rules({"base": 2, "incr": 3, **r.keep_by_tier}, r.max_age, r.min_keep)))
def test_no_ancestor_of_a_kept_incremental_is_deleted(entries: list[tuple[int, int | None, bool]], rules: Rules) -> None:
    ordered = sorted(entries, key=lambda entry: -entry[0])  # oldest first: a parent is always older
    backups: list[BackupFacts] = []
    for index, (age, parent_index, missing) in enumerate(ordered):
        started = NOW - timedelta(hours=age)
        parent = None
        if parent_index is not None and backups:
            parent = backups[parent_index % len(backups)].id if not missing else new_backup_id(started, "dead")
        tier = "base" if parent is None else "incr"
        backups.append(BackupFacts(new_backup_id(started, f"{index:04x}"), "app", tier, started, parent))
    decisions = plan(backups, "app", "s", rules, NOW)
    gone = set(deleted(decisions))
    parents = {b.id: b.parent for b in backups}
    for backup in backups:
        if backup.id in gone:
            continue
        ancestor = backup.parent
        while ancestor is not None and ancestor in parents:
            assert ancestor not in gone, f"{ancestor} deleted though {backup.id} is kept and based on it"
            ancestor = parents[ancestor]
    remaining = [b for b in backups if b.id not in gone]
    assert deleted(plan(remaining, "app", "s", rules, NOW)) == []
