"""Retention as a pure decision: (backups, rules, now) → keep or delete, each with its reason.

Deleting is a separate step (``jobs/prune.py``). Invariants, each property-tested:

- the newest valid backup of a target is never deleted;
- a target never drops below ``min_keep`` valid backups;
- nothing is deleted while the target's latest backup attempt failed;
- only the given target's backups are ever decided on;
- planning again over what is left deletes nothing more;
- no backup that a kept incremental base backup depends on (its chain down to a full) is deleted.

Decisions are made per storage, so a backup can be kept off-site and expire locally.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from dbguardian.chains import needed_by
from dbguardian.units import format_duration


@dataclass(frozen=True)
class BackupFacts:
    id: str
    target: str
    tier: str
    started_at: datetime
    parent: str | None = None
    """An incremental base backup's parent (the backup it was taken against); None for the others."""


@dataclass(frozen=True)
class Rules:
    keep_by_tier: Mapping[str, int | None] = field(default_factory=dict)
    max_age: timedelta | None = None
    min_keep: int = 1


@dataclass(frozen=True)
class Decision:
    backup_id: str
    target: str
    tier: str
    storage: str
    delete: bool
    reason: str
    kept_for: str | None = None
    """Kept only because this incremental (kept) is based on it: the rules alone would delete it."""


def plan(
    backups: Iterable[BackupFacts],
    target: str,
    storage: str,
    rules: Rules,
    now: datetime,
    *,
    last_attempt_failed: bool = False,
) -> list[Decision]:
    """Decide, for every valid backup of ``target`` on ``storage``, whether retention deletes it."""
    mine = sorted((b for b in backups if b.target == target), key=lambda b: (b.started_at, b.id), reverse=True)
    decisions: list[Decision] = []
    rank_in_tier: dict[str, int] = {}
    min_keep = max(rules.min_keep, 1)
    for position, backup in enumerate(mine):
        rank = rank_in_tier.get(backup.tier, 0)
        rank_in_tier[backup.tier] = rank + 1
        keep_count = rules.keep_by_tier.get(backup.tier)
        age = now - backup.started_at

        def decide(delete: bool, reason: str, backup: BackupFacts = backup) -> None:
            decisions.append(Decision(backup.id, target, backup.tier, storage, delete, reason))

        if last_attempt_failed:
            decide(False, "kept: the latest backup attempt failed, nothing is deleted until one succeeds")
        elif position == 0:
            decide(False, "kept: newest valid backup")
        elif position < min_keep:
            decide(False, f"kept: within min_keep {min_keep}")
        elif keep_count is not None and rank >= keep_count:
            decide(True, f"beyond keep {keep_count} of tier {backup.tier} (number {rank + 1} newest)")
        elif rules.max_age is not None and age > rules.max_age:
            decide(True, f"older than max_age {format_duration(rules.max_age)} (age {format_duration(_whole(age))})")
        elif keep_count is not None:
            decide(False, f"kept: within keep {keep_count} of tier {backup.tier}")
        else:
            decide(False, "kept: no rule removes it")
    return _keep_chains(decisions, {backup.id: backup.parent for backup in mine})


def _keep_chains(decisions: list[Decision], parents: Mapping[str, str | None]) -> list[Decision]:
    """Keep every backup that a kept incremental needs to be restored (``chains.needed_by``)."""
    needed = needed_by((d.backup_id for d in decisions if not d.delete), parents)
    return [
        replace(
            decision,
            delete=False,
            reason=f"kept: incremental {needed[decision.backup_id]} is based on it",
            kept_for=needed[decision.backup_id],
        )
        if decision.delete and decision.backup_id in needed
        else decision
        for decision in decisions
    ]


def _whole(age: timedelta) -> timedelta:
    return timedelta(seconds=int(age.total_seconds()))
