"""Prune: apply retention decisions, then remove leftovers of failed runs and stale uploads.

Decide first (``retention.plan``), then act: for each backup to delete, its manifest goes first
(the backup stops existing for everyone at once), then its data objects.

WAL (targets with ``wal:``): after the base backups of a storage are decided, WAL older than the start of
the oldest base backup kept on that storage (per timeline) is deleted (``catalog.wal.wal_to_delete``),
oldest first, so an interrupted prune never leaves a hole. ``.history`` files are kept; timelines no kept
base backup reaches are kept whole (history files are not read: keeping is the safe side); with no base
backup on the storage, no WAL is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from dbguardian.catalog import keys
from dbguardian.catalog.archive import list_wal
from dbguardian.catalog.leftovers import remove_leftovers
from dbguardian.catalog.manifest import AnyManifest, PhysicalManifest
from dbguardian.catalog.service import Catalog
from dbguardian.catalog.wal import BaseBackupWal, WalRange, parse_lsn, segment_ranges, wal_to_delete
from dbguardian.errors import DbguardianError
from dbguardian.jobs.outcome import JobContext, JobKind, JobOutcome, no_specs
from dbguardian.logs import get_logger
from dbguardian.policy import Policy
from dbguardian.retention import BackupFacts, Decision, Rules, plan
from dbguardian.schedule import JobSpec
from dbguardian.state import last_attempt_failed
from dbguardian.storage import Storage, target_storages
from dbguardian.storage.base import stale_upload_cleaner

log = get_logger("dbguardian.prune")


@dataclass
class PruneResult:
    decisions: list[Decision] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    aborted_uploads: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wal_ranges: list[tuple[str, WalRange]] = field(default_factory=list)
    """(storage, range) of WAL retention deletes (or would delete, in a dry run)."""
    wal_deleted: int = 0


def rules_for(policy: Policy, target_name: str, storage_name: str) -> Rules:
    target = policy.targets[target_name]
    keep = {tier: schedule.keep for tier, schedule in target.schedules.items()}
    override = target.retention.storage.get(storage_name)
    max_age = target.retention.max_age
    min_keep = target.retention.min_keep
    if override is not None:
        keep.update(override.keep)
        max_age = override.max_age if override.max_age is not None else max_age
        min_keep = override.min_keep if override.min_keep is not None else min_keep
    return Rules(keep_by_tier=keep, max_age=max_age, min_keep=min_keep)


async def delete_backup(storage: Storage, target: str, backup_id: str) -> None:
    """Manifest first (the backup stops existing for every reader at once), then its data objects."""
    await storage.delete(keys.manifest_key(target, backup_id))
    for info in await storage.list(keys.backup_prefix(target, backup_id)):
        if not (parsed := keys.parse_backup_key(info.key)) or not parsed.is_manifest:
            await storage.delete(info.key)


async def prune_target(
    policy: Policy, target_name: str, *, dry_run: bool = False, now: datetime | None = None
) -> PruneResult:
    moment = now or datetime.now(UTC)
    failed = last_attempt_failed(policy.state_dir, target_name)
    result = PruneResult()
    for storage in target_storages(policy, target_name):
        try:
            await _prune_storage(policy, target_name, storage, moment, failed, dry_run, result)
        except DbguardianError as error:
            result.errors.append(f"{storage.name}: {error}")
            log.error("prune failed on a storage", target=target_name, storage=storage.name, error=str(error))
    return result


async def _prune_storage(
    policy: Policy,
    target_name: str,
    storage: Storage,
    now: datetime,
    failed: bool,
    dry_run: bool,
    result: PruneResult,
) -> None:
    records = await Catalog([storage]).backups(target_name)
    facts = [BackupFacts(r.id, r.manifest.target, r.manifest.tier, r.manifest.started_at, _parent(r.manifest))
             for r in records]  # fmt: skip
    decisions = plan(facts, target_name, storage.name, rules_for(policy, target_name, storage.name), now,
                     last_attempt_failed=failed)  # fmt: skip
    result.decisions.extend(decisions)
    for decision in decisions:
        if not decision.delete:
            continue
        log.info("retention deletes", dry_run=dry_run, target=target_name, storage=storage.name,
                 id=decision.backup_id, reason=decision.reason)  # fmt: skip
        if not dry_run:
            await delete_backup(storage, target_name, decision.backup_id)
            result.deleted.append((storage.name, decision.backup_id))
    if policy.targets[target_name].wal is not None:
        deleted_ids = {d.backup_id for d in decisions if d.delete}
        kept = [r.manifest for r in records if r.id not in deleted_ids and isinstance(r.manifest, PhysicalManifest)]
        await _prune_wal(storage, target_name, kept, dry_run, result)
    if dry_run:
        return
    result.leftovers.extend(await remove_leftovers(storage, target_name, now, policy.leftover_grace))
    cleaner = stale_upload_cleaner(storage)  # declared by Capabilities.stale_upload_cleanup
    if cleaner is not None:
        aborted = await cleaner.abort_stale_uploads(now - policy.leftover_grace)
        result.aborted_uploads.extend(aborted)


async def _prune_wal(
    storage: Storage, target_name: str, kept: list[PhysicalManifest], dry_run: bool, result: PruneResult
) -> None:
    archived = await list_wal(storage, target_name)
    retained = [BaseBackupWal(m.id, m.timeline, parse_lsn(m.start_lsn)) for m in kept]
    doomed = {d.name for d in wal_to_delete([a.name for a in archived], retained) if d.delete}
    if not doomed:
        return
    ranges = segment_ranges(doomed)
    result.wal_ranges += [(storage.name, item) for item in ranges]
    for item in ranges:
        log.info("WAL retention deletes", dry_run=dry_run, target=target_name, storage=storage.name,
                 first=item.first, last=item.last, segments=item.count)  # fmt: skip
    if dry_run:
        return
    for stored in archived:  # name order: oldest first
        if stored.name in doomed:
            await storage.delete(stored.key)
            result.wal_deleted += 1


async def prune(
    policy: Policy, target_name: str | None = None, *, dry_run: bool = False, now: datetime | None = None
) -> PruneResult:
    names = [target_name] if target_name else sorted(policy.targets)
    total = PruneResult()
    for name in names:
        part = await prune_target(policy, name, dry_run=dry_run, now=now)
        total.decisions += part.decisions
        total.deleted += part.deleted
        total.leftovers += part.leftovers
        total.aborted_uploads += part.aborted_uploads
        total.errors += part.errors
        total.wal_ranges += part.wal_ranges
        total.wal_deleted += part.wal_deleted
    return total


async def run(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """Retention for one target: a follow-up of every successful backup, under the target's lock."""
    outcome = JobOutcome()
    try:
        pruned = await prune_target(ctx.policy, spec.target, now=ctx.clock())
    except Exception as error:  # pruning problems are reported, never fatal
        log.exception("prune crashed", target=spec.target, error=repr(error))
        outcome.result = "failure"
        outcome.observe("prune_runs", spec.target, "failure", op="inc")
        return outcome
    for storage_name, _ in pruned.deleted:
        outcome.observe("pruned_backups", spec.target, storage_name, op="inc")
    outcome.result = "failure" if pruned.errors else "success"
    outcome.observe("prune_runs", spec.target, outcome.result, op="inc")
    return outcome


KIND = JobKind("prune", "follow_up", no_specs, run, exclusive=True)


def _parent(manifest: AnyManifest) -> str | None:
    """The backup an incremental base backup is based on (retention keeps it while the incremental stays)."""
    return manifest.incremental_of if isinstance(manifest, PhysicalManifest) else None
