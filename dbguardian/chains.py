"""Incremental base backup chains, pure: each incremental names the backup it was taken against (its
parent), a full backup or another incremental, down to a full. Restoring one needs its whole chain
(``pg_combinebackup full incr1 … incrN``), so retention keeps every ancestor of a kept incremental and
health reports a chain with a missing link (``chain_broken``).

``parents`` maps each backup id on one storage to its parent's id (None for a full backup).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def chain(backup_id: str, parents: Mapping[str, str | None]) -> list[str] | None:
    """The backups a restore of ``backup_id`` combines, the full one first; None when a link is missing
    (or the links loop, which only a damaged catalog could hold)."""
    links: list[str] = []
    current: str | None = backup_id
    while current is not None:
        if current not in parents or current in links:
            return None
        links.append(current)
        current = parents[current]
    return links[::-1]


def missing_link(backup_id: str, parents: Mapping[str, str | None]) -> str | None:
    """The first ancestor of ``backup_id`` that is not there (None when the chain is whole)."""
    seen: set[str] = set()
    current: str | None = backup_id
    while current is not None:
        if current not in parents:
            return current
        if current in seen:
            return current  # a loop: the chain never reaches a full backup
        seen.add(current)
        current = parents[current]
    return None


def needed_by(kept: Iterable[str], parents: Mapping[str, str | None]) -> dict[str, str]:
    """Every ancestor of a kept backup, mapped to its child in that chain (the incremental based on it)."""
    needed: dict[str, str] = {}
    for backup_id in kept:
        child, current = backup_id, parents.get(backup_id)
        while current is not None and current in parents and current not in needed and current != backup_id:
            needed[current] = child
            child, current = current, parents[current]
    return needed
