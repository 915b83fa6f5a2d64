"""Storage backends: one module per backend, all behind :class:`dbguardian.storage.base.Storage`,
found by ``type`` in :mod:`dbguardian.storage.registry`."""

from __future__ import annotations

from dbguardian.policy import Policy
from dbguardian.policy.storage import StorageConfigBase
from dbguardian.storage.base import Capabilities, ObjectInfo, ObjectWriter, Storage
from dbguardian.storage.local import LocalStorage
from dbguardian.storage.registry import backend_for

__all__ = ["Capabilities", "LocalStorage", "ObjectInfo", "ObjectWriter", "Storage", "open_storage", "target_storages"]


def open_storage(name: str, config: StorageConfigBase) -> Storage:
    """The backend for one ``storage.<name>`` entry of the policy."""
    return backend_for(config).factory(name, config)


def target_storages(policy: Policy, target_name: str) -> list[Storage]:
    """The storages of one target, in the policy's order (an unknown target is a usage error)."""
    return [open_storage(name, policy.storage[name]) for name in policy.target(target_name).storage]
