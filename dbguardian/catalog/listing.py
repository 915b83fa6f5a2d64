"""Finding backup folders on a storage without walking what lies beside them (WAL, probes)."""

from __future__ import annotations

from dbguardian.catalog import keys
from dbguardian.storage.base import Storage


async def list_folders(storage: Storage, prefix: str) -> list[str]:
    """Next-level folder names under ``prefix``; only called for storages with ``capabilities.delimiter_listing``
    (without it a backend may walk every object below ``prefix``, and one recursive listing is cheaper)."""
    return [keys.folder_name(prefix, entry) for entry in await storage.list_dirs(prefix)]


async def backup_ids(storage: Storage, target: str) -> list[str]:
    """Ids of the target's backup folders (committed or not), from a delimiter listing of ``<target>/``."""
    return sorted(name for name in await list_folders(storage, keys.target_prefix(target)) if keys.is_backup_id(name))
