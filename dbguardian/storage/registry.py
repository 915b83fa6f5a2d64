"""Storage backends by ``type``: config model, factory, declared capabilities.

The policy validates each ``storage.<name>`` entry with the config model registered for its
``type`` (it finds this module by name, see :mod:`dbguardian.policy.storage`), and
:func:`dbguardian.storage.open_storage` builds the backend with the registered factory. Adding a
backend = its module (config model + storage class) + one entry in ``BACKENDS``; nothing in the
policy, jobs or prune changes. A factory imports its heavy dependencies (aioboto3) only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dbguardian.allocator import tune_allocator
from dbguardian.policy.storage import StorageConfigBase
from dbguardian.storage.azure.config import AZURE_CAPABILITIES, AzureStorageConfig
from dbguardian.storage.base import Capabilities, Storage
from dbguardian.storage.gcs.config import GCS_CAPABILITIES, GcsStorageConfig
from dbguardian.storage.local import LocalStorage, LocalStorageConfig
from dbguardian.storage.s3.config import S3_CAPABILITIES, S3StorageConfig


@dataclass(frozen=True)
class Backend:
    config: type[StorageConfigBase]
    factory: Callable[[str, Any], Storage]
    """``factory(name, config)``: the storage for one policy entry (``config`` is an instance of ``config``)."""
    capabilities: Capabilities


def _local(name: str, config: LocalStorageConfig) -> Storage:
    return LocalStorage(name, config.path)


def _s3(name: str, config: S3StorageConfig) -> Storage:
    from dbguardian.storage.s3.storage import S3Storage  # imports aioboto3: only when a policy uses S3

    # Multi-MiB upload parts are what make glibc's adaptive threshold keep tens of MB (allocator.py).
    tune_allocator()
    return S3Storage(name, config)


def _gcs(name: str, config: GcsStorageConfig) -> Storage:
    from dbguardian.storage.gcs.storage import GcsStorage  # imports gcloud-aio-storage: only when a policy uses GCS

    tune_allocator()  # multi-MiB resumable chunks (8 MiB by default), as for S3 parts
    return GcsStorage(name, config)


def _azure(name: str, config: AzureStorageConfig) -> Storage:
    from dbguardian.storage.azure.storage import AzureStorage  # imports azure-storage-blob: only when a policy uses it

    tune_allocator()  # multi-MiB blocks, as for S3 parts
    return AzureStorage(name, config)


BACKENDS: Mapping[str, Backend] = {
    "local": Backend(LocalStorageConfig, _local, LocalStorage.capabilities),
    "s3": Backend(S3StorageConfig, _s3, S3_CAPABILITIES),
    "azure": Backend(AzureStorageConfig, _azure, AZURE_CAPABILITIES),
    "gcs": Backend(GcsStorageConfig, _gcs, GCS_CAPABILITIES),
}


def config_models() -> Mapping[str, type[StorageConfigBase]]:
    """``type`` → config model, for the policy's validation of ``storage:`` entries."""
    return {kind: backend.config for kind, backend in BACKENDS.items()}


def backend_for(config: StorageConfigBase) -> Backend:
    try:
        return BACKENDS[config.type]
    except KeyError:
        raise AssertionError(f"no storage backend registered for type {config.type!r}") from None
