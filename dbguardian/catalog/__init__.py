"""The catalog: what backups exist on storage, how they are laid out, and what each one holds.

- :mod:`~dbguardian.catalog.keys` — the object layout; the only place keys are built and parsed.
- :mod:`~dbguardian.catalog.manifest` — the typed, versioned manifest (``kind``: logical | physical).
- :mod:`~dbguardian.catalog.service` — :class:`Catalog`: list / latest / by id / at or before a time /
  newest by tier, used by every caller.
- :mod:`~dbguardian.catalog.leftovers` — objects of failed runs (backup folders without a manifest).

A backup exists only where its manifest exists; the manifest is written last.
"""

from __future__ import annotations

from dbguardian.catalog.keys import (
    MANIFEST_NAME,
    is_backup_id,
    manifest_key,
    new_backup_id,
    object_key,
    parse_backup_id,
)
from dbguardian.catalog.leftovers import find_leftovers, remove_leftovers
from dbguardian.catalog.manifest import (
    MANIFEST_FORMAT,
    SAFETY_TIER,
    AnyManifest,
    BaseManifest,
    Compression,
    Encryption,
    InvalidManifest,
    Kind,
    LogicalManifest,
    PhysicalManifest,
    StoredObject,
    TableCount,
    UnsupportedManifestFormat,
    parse_manifest,
)
from dbguardian.catalog.service import (
    AnyBackup,
    Backup,
    BackupRecord,
    Catalog,
    at_or_before,
    by_id,
    commit_manifest,
    latest,
    newest_by_tier,
    read_manifest,
    select,
)

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "SAFETY_TIER",
    "AnyBackup",
    "AnyManifest",
    "Backup",
    "BackupRecord",
    "BaseManifest",
    "Catalog",
    "Compression",
    "Encryption",
    "InvalidManifest",
    "Kind",
    "LogicalManifest",
    "PhysicalManifest",
    "StoredObject",
    "TableCount",
    "UnsupportedManifestFormat",
    "at_or_before",
    "by_id",
    "commit_manifest",
    "find_leftovers",
    "is_backup_id",
    "latest",
    "manifest_key",
    "new_backup_id",
    "newest_by_tier",
    "object_key",
    "parse_backup_id",
    "parse_manifest",
    "read_manifest",
    "remove_leftovers",
    "select",
]
