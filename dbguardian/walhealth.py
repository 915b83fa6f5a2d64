"""WAL archiving verdicts and the recovery point, pure: facts gathered by ``archiving/status.py`` in, verdicts out.

The checks of a target with ``wal:`` (same :class:`~dbguardian.health.Verdict` and alert path as the
backup checks):

- ``wal_stale``: a storage's newest archived segment is older than ``rpo_target`` — unless the storage
  is *caught up* (it holds the last segment the server archived, the spool is empty and the archiver
  reports no failure since): an idle server writes no WAL, and PostgreSQL switches segments at least
  every ``archive_timeout`` when it does write, so an old newest segment alone is not a lost RPO.
- ``wal_backlog``: the spool holds more than ``max_spool`` bytes, or its oldest file waits longer than
  ``rpo_target`` (the shipper is behind or a storage is down; nothing is ever deleted from it).
- ``archiver_failing``: ``pg_stat_archiver`` shows a failure newer than its last success (PostgreSQL
  cannot even put segments into the spool: a full disk, wrong permissions, a missing directory).
- ``wal_gap``: a segment is missing between the oldest base backup's start and the newest segment on a
  storage: point-in-time recovery past the gap is impossible.
- ``base_stale``: the newest base backup is older than its tier's schedule period plus a grace.
- ``chain_broken``: an incremental base backup on a storage lacks a backup it is based on there (its
  chain down to a full one, :mod:`dbguardian.chains`): it cannot be restored from that storage.

The recovery point (``dbguardian_rpo_seconds``) is the age of the newest WAL the best storage holds,
bounded by ``archive_timeout`` while that storage is caught up: what a restore from it would lose now.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dbguardian.chains import missing_link
from dbguardian.health import Verdict
from dbguardian.units import format_duration, format_size

WAL_CHECKS = ("wal_stale", "wal_backlog", "archiver_failing", "wal_gap", "base_stale", "chain_broken")


BASE_STALE_GRACE = timedelta(hours=2)
"""How late a base backup may be past its tier's period (a weekly backup of a large cluster takes hours)."""


@dataclass(frozen=True)
class StorageWal:
    """What one storage holds of the target's WAL."""

    newest_segment: str | None = None
    newest_at: datetime | None = None
    """When the newest segment was stored (the object's modification time)."""
    gaps: Sequence[str] = ()
    """Missing segment names (first few) between the oldest base backup's start and the newest segment."""
    gap_count: int = 0
    holds_last_archived: bool = False
    """Whether it has the segment ``pg_stat_archiver`` last archived."""
    error: str | None = None
    """The storage could not be listed."""
    broken_chains: Sequence[str] = ()
    """Incremental base backups whose chain lacks a link on this storage: ``"<id> (needs <missing>)"``."""


@dataclass(frozen=True)
class ArchiverStats:
    """``pg_stat_archiver`` plus the settings that bound the RPO."""

    archived_count: int
    failed_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    last_failed_wal: str | None
    last_failed_time: datetime | None
    archive_timeout: timedelta = timedelta(0)


@dataclass(frozen=True)
class SpoolState:
    files: int = 0
    bytes: int = 0
    oldest_at: datetime | None = None
    oldest_name: str | None = None


@dataclass(frozen=True)
class WalFacts:
    storages: Mapping[str, StorageWal]
    spool: SpoolState
    archiver: ArchiverStats | None = None
    """None when the database could not be asked (the backup checks report that)."""
    newest_base_at: datetime | None = None
    base_max_age: timedelta | None = None
    """The physical tiers' shortest period plus grace; None when the target has no physical tier."""
    base_tier: str = "physical"
    extra: Mapping[str, str] = field(default_factory=dict)


def archiver_failing(stats: ArchiverStats) -> bool:
    """A failure after the last success (or failures and never a success)."""
    if stats.last_failed_time is None:
        return False
    return stats.last_archived_time is None or stats.last_failed_time > stats.last_archived_time


def caught_up(storage: StorageWal, facts: WalFacts) -> bool:
    """Nothing PostgreSQL finished is missing from ``storage``: see the module docstring."""
    stats = facts.archiver
    return stats is not None and storage.holds_last_archived and facts.spool.files == 0 and not archiver_failing(stats)


def storage_rpo(storage: StorageWal, facts: WalFacts, now: datetime) -> timedelta | None:
    """What a restore from ``storage`` would lose now; None when it holds no WAL."""
    if storage.newest_at is None:
        return None
    age = max(now - storage.newest_at, timedelta(0))
    stats = facts.archiver
    if caught_up(storage, facts) and stats is not None and stats.archive_timeout > timedelta(0):
        return min(age, stats.archive_timeout)
    return age


def rpo(facts: WalFacts, now: datetime) -> timedelta | None:
    """The target's recovery point: the best storage's (None when no storage holds WAL)."""
    values = [value for value in (storage_rpo(s, facts, now) for s in facts.storages.values()) if value is not None]
    return min(values, default=None)


def _age(now: datetime, moment: datetime) -> str:
    return format_duration(timedelta(seconds=max(0, int((now - moment).total_seconds()))))


def evaluate_wal(target: str, facts: WalFacts, rpo_target: timedelta, max_spool: int, now: datetime) -> list[Verdict]:
    """The WAL checks of one target, in :data:`WAL_CHECKS` order."""
    verdicts: list[Verdict] = []

    def add(check: str, ok: bool, observed: str, expected: str) -> None:
        verdicts.append(Verdict(target, check, ok, observed, expected))

    stale: list[str] = []
    fresh: list[str] = []
    for name, storage in sorted(facts.storages.items()):
        if storage.error is not None:
            stale.append(f"{name}: cannot list WAL: {storage.error}")
        elif storage.newest_at is None:
            stale.append(f"{name}: no WAL archived")
        elif now - storage.newest_at > rpo_target and not caught_up(storage, facts):
            stale.append(f"{name}: newest segment {storage.newest_segment} is {_age(now, storage.newest_at)} old")
        else:
            state = "caught up" if caught_up(storage, facts) else f"{_age(now, storage.newest_at)} old"
            fresh.append(f"{name}: {storage.newest_segment} ({state})")
    add("wal_stale", not stale, "; ".join(stale or fresh) or "no storage",
        f"every storage holds WAL younger than {format_duration(rpo_target)} or everything the server archived")  # fmt: skip

    spool = facts.spool
    backlog: list[str] = []
    if spool.bytes > max_spool:
        backlog.append(f"spool holds {format_size(spool.bytes)} in {spool.files} file(s)")
    if spool.oldest_at is not None and now - spool.oldest_at > rpo_target:
        backlog.append(f"oldest spool file {spool.oldest_name} waits for {_age(now, spool.oldest_at)}")
    observed = "; ".join(backlog) or f"spool holds {spool.files} file(s), {format_size(spool.bytes)}"
    add("wal_backlog", not backlog, observed,
        f"at most {format_size(max_spool)} in the spool, none older than {format_duration(rpo_target)}")  # fmt: skip

    stats = facts.archiver
    if stats is None:
        add(
            "archiver_failing",
            True,
            "pg_stat_archiver not read (database unreachable)",
            "no archive failure since the last success",
        )
    else:
        failing = archiver_failing(stats)
        observed = (
            f"last failure {stats.last_failed_wal} at {stats.last_failed_time:%Y-%m-%d %H:%M:%S}Z"
            f" after the last success ({stats.last_archived_wal or 'never'}); {stats.failed_count} failure(s) in total"
            if failing and stats.last_failed_time is not None
            else f"{stats.archived_count} archived, last {stats.last_archived_wal or 'none yet'}"
        )
        add("archiver_failing", not failing, observed, "no archive failure since the last success")

    gaps = [
        f"{name}: {storage.gap_count} missing segment(s) from {', '.join(storage.gaps)}"
        for name, storage in sorted(facts.storages.items())
        if storage.gap_count
    ]
    add(
        "wal_gap",
        not gaps,
        "; ".join(gaps) or "no missing segment",
        "every segment from the oldest base backup's start to the newest",
    )

    if facts.base_max_age is None:
        add("base_stale", True, "no physical tier", "a base backup per physical tier period")
    elif facts.newest_base_at is None:
        add("base_stale", False, "no base backup", f"a base backup younger than {format_duration(facts.base_max_age)}")
    else:
        age = now - facts.newest_base_at
        add("base_stale", age <= facts.base_max_age, f"newest base backup is {_age(now, facts.newest_base_at)} old",
            f"a base backup younger than {format_duration(facts.base_max_age)}")  # fmt: skip
    broken = [f"{name}: {', '.join(storage.broken_chains)}" for name, storage in sorted(facts.storages.items())
              if storage.broken_chains]  # fmt: skip
    add("chain_broken", not broken, "; ".join(broken) or "every incremental's chain is whole",
        "every incremental base backup with its whole chain down to a full one on the same storage")  # fmt: skip
    return verdicts


def broken_chains(parents: Mapping[str, str | None]) -> list[str]:
    """``"<id> (needs <missing>)"`` for each incremental whose chain has a missing link."""
    found = []
    for backup_id, parent in sorted(parents.items()):
        gone = None if parent is None else missing_link(backup_id, parents)
        if gone is not None:
            found.append(f"{backup_id} (needs {gone})")
    return found


def base_max_age(periods: Sequence[timedelta]) -> timedelta | None:
    """The allowed age of the newest base backup: the shortest physical tier period plus a grace."""
    return min(periods) + BASE_STALE_GRACE if periods else None
