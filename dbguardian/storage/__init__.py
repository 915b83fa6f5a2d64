"""Storage backends: one module per backend, all behind :class:`dbguardian.storage.base.Storage`."""

from __future__ import annotations

from dbguardian.allocator import tune_allocator
from dbguardian.policy import LocalStorageConfig, S3StorageConfig, StorageConfig
from dbguardian.storage.base import ObjectInfo, ObjectWriter, Storage
from dbguardian.storage.local import LocalStorage

__all__ = ["LocalStorage", "ObjectInfo", "ObjectWriter", "Storage", "open_storage"]


def open_storage(name: str, config: StorageConfig) -> Storage:
    """The backend for one ``storage.<name>`` entry of the policy."""
    if isinstance(config, LocalStorageConfig):
        return LocalStorage(name, config.path)
    if isinstance(config, S3StorageConfig):
        from dbguardian.storage.s3 import S3Storage  # imports aioboto3: only when a policy uses S3

        # Multi-MiB upload parts are what make glibc's adaptive threshold keep tens of MB (allocator.py).
        tune_allocator()
        return S3Storage(name, config)
    raise AssertionError(f"unhandled storage config {type(config).__name__}")
