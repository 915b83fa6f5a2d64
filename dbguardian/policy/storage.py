"""The policy's ``storage:`` entries: a common base, validated by the backend that owns the type.

Each backend keeps its own config model next to its code (``dbguardian/storage/local.py``,
``dbguardian/storage/s3/config.py``, ...), and ``dbguardian.storage.registry`` maps ``type`` to it.
The policy sits below storage in the layers, so it cannot import that registry statically; it finds
it at validation time instead, through ``importlib`` by its well-known module name — plugin
discovery: adding a backend adds a module and a registry entry, and the policy never changes. (A
pydantic validation context would also work, but then every ``Policy(...)`` call would have to
pass the registry in; the environment-override machinery of pydantic-settings builds the model
itself and passes no context.)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Annotated, Any, Protocol

from pydantic import SerializeAsAny, ValidatorFunctionWrapHandler, WrapValidator

from dbguardian.policy.base import StrictModel

REGISTRY_MODULE = "dbguardian.storage.registry"


class StorageConfigBase(StrictModel):
    """What every storage entry has: its ``type``. Backends subclass it with ``type: Literal[...]``."""

    type: str


class ConfigRegistry(Protocol):
    def config_models(self) -> Mapping[str, type[StorageConfigBase]]: ...


def storage_config_models() -> Mapping[str, type[StorageConfigBase]]:
    """``type`` → config model, from the storage registry (imported on first use)."""
    registry: ConfigRegistry = importlib.import_module(REGISTRY_MODULE)
    return registry.config_models()


def _validate_entry(value: Any, _handler: ValidatorFunctionWrapHandler) -> StorageConfigBase:
    models = storage_config_models()
    if isinstance(value, StorageConfigBase):
        if type(value) in models.values():
            return value
        value = value.model_dump()
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping with a 'type' key (e.g. {type: local, path: /var/backups})")
    kind = value.get("type")
    if kind is None:
        raise ValueError("'type' is missing; expected one of: " + ", ".join(repr(name) for name in models))
    if not isinstance(kind, str) or kind not in models:
        raise ValueError(f"unknown type {kind!r}; expected one of: {', '.join(repr(name) for name in models)}")
    # Errors inside keep their paths (storage.<name>.bucket): pydantic nests this ValidationError.
    return models[kind].model_validate(value)


StorageConfig = Annotated[SerializeAsAny[StorageConfigBase], WrapValidator(_validate_entry)]
"""A ``storage.<name>`` entry, validated by the config model its ``type`` names."""
