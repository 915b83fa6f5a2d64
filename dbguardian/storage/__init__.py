"""Storage backends: one module per backend, all behind :class:`dbguardian.storage.base.Storage`."""

from __future__ import annotations

from dbguardian.policy import LocalStorageConfig, StorageConfig
from dbguardian.storage.base import ObjectInfo, ObjectWriter, Storage
from dbguardian.storage.local import LocalStorage

__all__ = ["LocalStorage", "ObjectInfo", "ObjectWriter", "Storage", "open_storage"]


def open_storage(name: str, config: StorageConfig) -> Storage:
    """The backend for one ``storage.<name>`` entry of the policy."""
    if isinstance(config, LocalStorageConfig):
        return LocalStorage(name, config.path)
    raise AssertionError(f"unhandled storage config {type(config).__name__}")
