"""Finding backup folders on a storage without walking what lies beside them (WAL, probes)."""

from __future__ import annotations

from typing import Protocol, cast

from dbguardian.catalog import keys
from dbguardian.storage.base import Storage


class _DirLister(Protocol):
    async def list_dirs(self, prefix: str) -> list[str]: ...


async def list_folders(storage: Storage, prefix: str) -> list[str]:
    """Next-level folder names under ``prefix``; only for storages with ``capabilities.delimiter_listing``."""
    return [keys.folder_name(prefix, entry) for entry in await cast(_DirLister, storage).list_dirs(prefix)]


async def backup_ids(storage: Storage, target: str) -> list[str]:
    """Ids of the target's backup folders (committed or not), from a delimiter listing of ``<target>/``."""
    return sorted(name for name in await list_folders(storage, keys.target_prefix(target)) if keys.is_backup_id(name))
