"""The state of a target's WAL archive, gathered: the server's archiver, the spool, every storage.

``dbguardian wal status`` prints it, the health job turns it into verdicts (:mod:`dbguardian.walhealth`)
and gauges. Reading is cheap: one ``pg_stat_archiver`` query, one directory scan, one listing of the
WAL namespace per storage (no object is read).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dbguardian.catalog.archive import ArchivedWal, list_wal, newest_segment
from dbguardian.catalog.manifest import PhysicalManifest
from dbguardian.catalog.service import Catalog
from dbguardian.catalog.wal import DEFAULT_SEGMENT_SIZE, classify, missing_segments, parse_lsn, segment_of_lsn
from dbguardian.errors import DbguardianError
from dbguardian.health import Verdict
from dbguardian.logs import get_logger
from dbguardian.policy import Policy
from dbguardian.postgres import connected, connection_info
from dbguardian.schedule import JobSpec, next_runs
from dbguardian.spool import is_wal_file_name
from dbguardian.storage import Storage, target_storages
from dbguardian.walhealth import (
    ArchiverStats,
    SpoolState,
    StorageWal,
    WalFacts,
    base_max_age,
    broken_chains,
    evaluate_wal,
    rpo,
)

log = get_logger("dbguardian.wal")

MAX_GAPS_SHOWN = 5


@dataclass
class WalStatus:
    target: str
    facts: WalFacts
    verdicts: list[Verdict]
    rpo: timedelta | None
    current_segment: str | None = None
    database_error: str | None = None
    archived_at: dict[str, datetime] = field(default_factory=dict)
    """Per storage: when its newest segment was stored (for ``dbguardian_wal_last_archived_timestamp_seconds``)."""

    def to_json(self) -> dict[str, object]:
        facts = self.facts
        stats = facts.archiver
        return {
            "target": self.target,
            "healthy": all(v.ok for v in self.verdicts),
            "rpo_seconds": None if self.rpo is None else round(self.rpo.total_seconds(), 3),
            "current_segment": self.current_segment,
            "database_error": self.database_error,
            "archiver": None if stats is None else {
                "archived_count": stats.archived_count,
                "failed_count": stats.failed_count,
                "last_archived_wal": stats.last_archived_wal,
                "last_archived_time": _iso(stats.last_archived_time),
                "last_failed_wal": stats.last_failed_wal,
                "last_failed_time": _iso(stats.last_failed_time),
                "archive_timeout_seconds": stats.archive_timeout.total_seconds(),
            },
            "spool": {
                "files": facts.spool.files,
                "bytes": facts.spool.bytes,
                "oldest": facts.spool.oldest_name,
                "oldest_at": _iso(facts.spool.oldest_at),
            },
            "storages": {
                name: {
                    "newest_segment": storage.newest_segment,
                    "newest_at": _iso(storage.newest_at),
                    "holds_last_archived": storage.holds_last_archived,
                    "gaps": list(storage.gaps),
                    "gap_count": storage.gap_count,
                    "error": storage.error,
                }
                for name, storage in sorted(facts.storages.items())
            },
            "checks": [v.__dict__ for v in self.verdicts],
        }  # fmt: skip


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def scan_spool(spool: Path) -> SpoolState:
    """The finished WAL files waiting in the spool (temp files of a push in progress are not counted)."""
    files = total = 0
    oldest: tuple[float, str] | None = None
    try:
        entries = list(os.scandir(spool))
    except FileNotFoundError:
        return SpoolState()
    for entry in entries:
        if not is_wal_file_name(entry.name):
            continue
        try:
            stat = entry.stat()
        except FileNotFoundError:  # shipped meanwhile
            continue
        files += 1
        total += stat.st_size
        if oldest is None or (stat.st_mtime, entry.name) < oldest:
            oldest = (stat.st_mtime, entry.name)
    if oldest is None:
        return SpoolState(files, total)
    return SpoolState(files, total, datetime.fromtimestamp(oldest[0], UTC), oldest[1])


def spool_names(spool: Path) -> list[str]:
    try:
        return [path.name for path in spool.iterdir() if is_wal_file_name(path.name)]
    except FileNotFoundError:
        return []


def storage_wal(
    archived: Sequence[ArchivedWal],
    bases: Iterable[PhysicalManifest],
    last_archived: str | None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    *,
    waiting: Iterable[str] = (),
) -> StorageWal:
    """What one storage holds, with the gaps per timeline: from the oldest base backup's start segment on
    that timeline (else the timeline's first archived segment) up to its newest archived segment.

    ``waiting``: files still in the spool. The shipper sends several at once, so a later segment can be
    stored before an earlier one; a segment on its way is not a gap."""
    names = [item.name for item in archived]
    newest = newest_segment(archived, segment_size)
    floors: dict[int, int] = {}
    for base in bases:
        start = segment_of_lsn(base.timeline, parse_lsn(base.start_lsn), segment_size).number
        floors[base.timeline] = min(floors.get(base.timeline, start), start)
    by_timeline: dict[int, list[int]] = {}
    for name in names:
        file = classify(name, segment_size)
        if file.kind == "segment" and file.segment is not None:
            by_timeline.setdefault(file.timeline, []).append(file.segment.number)
    missing = []
    for timeline, numbers in sorted(by_timeline.items()):
        # WAL older than the oldest base backup may be missing (pruned or never needed); from it on, none may.
        floor = floors.get(timeline, min(numbers))
        missing += missing_segments([*names, *waiting], timeline, floor, max(numbers), segment_size=segment_size)
    return StorageWal(
        broken_chains=broken_chains({base.id: base.incremental_of for base in bases}),
        newest_segment=None if newest is None else newest.name,
        newest_at=None if newest is None else newest.modified,
        gaps=tuple(segment.name(segment_size) for segment in missing[:MAX_GAPS_SHOWN]),
        gap_count=len(missing),
        holds_last_archived=last_archived is not None and last_archived in names,
    )


def tier_periods(policy: Policy, target_name: str, now: datetime) -> list[timedelta]:
    """The period of each physical tier: the time between its next two fire times."""
    target = policy.target(target_name)
    periods = []
    for tier in target.physical_tiers():
        schedule = target.schedules[tier]
        spec = JobSpec("backup", target_name, tier, schedule.cron, schedule.every, policy.timezone)
        first, second = next_runs(spec, now, 2)
        periods.append(second - first)
    return periods


async def _archiver(policy: Policy, target_name: str) -> tuple[ArchiverStats, str]:
    async with connected(connection_info(policy.target(target_name))) as connection:
        row = await connection.fetchrow(
            "SELECT archived_count, failed_count, last_archived_wal, last_archived_time, last_failed_wal,"
            " last_failed_time, (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout') AS timeout,"
            " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current"
            " FROM pg_stat_archiver"
        )
    assert row is not None
    stats = ArchiverStats(
        archived_count=row["archived_count"],
        failed_count=row["failed_count"],
        last_archived_wal=row["last_archived_wal"],
        last_archived_time=row["last_archived_time"],
        last_failed_wal=row["last_failed_wal"],
        last_failed_time=row["last_failed_time"],
        archive_timeout=timedelta(seconds=row["timeout"]),
    )
    return stats, row["current"]


async def wal_status(
    policy: Policy, target_name: str, now: datetime, *, storages: Sequence[Storage] | None = None
) -> WalStatus:
    """Everything ``wal status`` shows and the WAL health checks judge, for one target with ``wal:``."""
    target = policy.target(target_name)
    if target.wal is None:
        raise DbguardianError(f"target {target_name!r} has no 'wal:' block: WAL is not archived")
    if storages is None:
        storages = target_storages(policy, target_name)
    archiver: ArchiverStats | None = None
    current: str | None = None
    database_error: str | None = None
    try:
        archiver, current = await _archiver(policy, target_name)
    except DbguardianError as error:
        database_error = str(error)
    last_archived = None if archiver is None else archiver.last_archived_wal
    per_storage: dict[str, StorageWal] = {}
    newest_base: datetime | None = None
    spool = scan_spool(target.wal.spool)
    waiting = spool_names(target.wal.spool)
    for storage in storages:
        try:
            archived = await list_wal(storage, target_name)
            records = await Catalog([storage]).backups(target_name)
        except DbguardianError as error:
            per_storage[storage.name] = StorageWal(error=str(error))
            continue
        bases = [r.manifest for r in records if isinstance(r.manifest, PhysicalManifest)]
        for base in bases:
            newest_base = max(newest_base or base.finished_at, base.finished_at)
        per_storage[storage.name] = storage_wal(archived, bases, last_archived, waiting=waiting)
    facts = WalFacts(
        storages=per_storage,
        spool=spool,
        archiver=archiver,
        newest_base_at=newest_base,
        base_max_age=base_max_age(tier_periods(policy, target_name, now)),
    )
    verdicts = evaluate_wal(target_name, facts, target.wal.rpo_target, target.wal.max_spool, now)
    archived_at = {name: s.newest_at for name, s in per_storage.items() if s.newest_at is not None}
    return WalStatus(target_name, facts, verdicts, rpo(facts, now), current, database_error, archived_at)
