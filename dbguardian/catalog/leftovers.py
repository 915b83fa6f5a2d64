"""Leftovers of failed or killed runs: objects in backup folders that never got a manifest.

Only backup folders are looked at (``<target>/<backup id>/``); the WAL namespace and anything else
under ``<target>/`` is never a leftover.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta

from dbguardian.catalog import keys
from dbguardian.catalog.listing import backup_ids
from dbguardian.logs import get_logger
from dbguardian.storage.base import ObjectInfo, Storage

log = get_logger("dbguardian.catalog")


def find_leftovers(objects: Iterable[ObjectInfo], now: datetime, grace: timedelta) -> list[str]:
    """Keys of objects in backup folders without a manifest, untouched for longer than ``grace``.

    A folder counts as idle only if both its run's start (the id) and its newest object are older
    than the grace period, so a long backup still writing is never taken for a leftover.
    """
    folders: dict[tuple[str, str], list[ObjectInfo]] = {}
    committed: set[tuple[str, str]] = set()
    for info in objects:
        parsed = keys.parse_backup_key(info.key)
        if parsed is None:
            continue
        folder = (parsed.target, parsed.backup_id)
        folders.setdefault(folder, []).append(info)
        if parsed.is_manifest:
            committed.add(folder)
    stale: list[str] = []
    for folder, infos in sorted(folders.items()):
        if folder in committed:
            continue
        last_activity = max([keys.parse_backup_id(folder[1]), *(info.modified for info in infos)])
        if now - last_activity >= grace:
            stale.extend(sorted(info.key for info in infos))
    return stale


async def backup_folder_objects(storage: Storage, target: str) -> list[ObjectInfo]:
    """Every object in the target's backup folders, without walking its WAL when the store can avoid it.

    With delimiter listing: one listing of the folders, then one recursive listing per distinct first
    character of the ids (backup ids start with their year, so usually one), never one per backup.
    """
    prefix = keys.target_prefix(target)
    if not storage.capabilities.delimiter_listing:
        return [info for info in await storage.list(prefix) if keys.parse_backup_key(info.key) is not None]
    starts = sorted({backup_id[0] for backup_id in await backup_ids(storage, target)})
    listings = await asyncio.gather(*(storage.list(keys.backup_id_prefix(target, start)) for start in starts))
    return [info for infos in listings for info in infos if keys.parse_backup_key(info.key) is not None]


async def remove_leftovers(storage: Storage, target: str, now: datetime, grace: timedelta) -> list[str]:
    leftover_keys = find_leftovers(await backup_folder_objects(storage, target), now, grace)
    for key in leftover_keys:
        await storage.delete(key)
    if leftover_keys:
        log.info("removed leftovers of failed runs", storage=storage.name, target=target, objects=leftover_keys)
    return leftover_keys
