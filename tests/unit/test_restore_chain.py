"""Which storage an incremental base backup is restored from: the first holding its whole chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbguardian.catalog import Backup, PhysicalManifest
from dbguardian.catalog.manifest import parse_manifest
from dbguardian.errors import BackupNotFound
from dbguardian.restore.combine import chain_on
from dbguardian.restore.physical import _with_chain
from dbguardian.storage.local import LocalStorage
from tests.unit.test_manifest import encoded, physical

FULL, FIRST, SECOND = "20261120T030000.000000Z-0001", "20261121T030000.000000Z-0002", "20261122T030000.000000Z-0003"


def base(backup_id: str, parent: str | None, chain: list[str], *storages: str) -> Backup[PhysicalManifest]:
    fields = physical(id=backup_id, format=3 if parent else 2, incremental_of=parent, chain=chain)
    fields["objects"] = {}
    manifest = parse_manifest(encoded(fields))
    assert isinstance(manifest, PhysicalManifest)
    return Backup(manifest, list(storages))


BACKUPS = [
    base(SECOND, FIRST, [FULL, FIRST], "local", "offsite"),
    base(FIRST, FULL, [FULL], "offsite"),
    base(FULL, None, [], "local", "offsite"),
]


def test_the_chain_comes_from_one_storage_full_first() -> None:
    assert [m.id for m in chain_on("offsite", BACKUPS, SECOND)] == [FULL, FIRST, SECOND]
    with pytest.raises(BackupNotFound, match=f"cannot be restored from local: the backup it is based on, {FIRST}, is not"):
        chain_on("local", BACKUPS, SECOND)


def test_the_first_storage_holding_the_whole_chain_is_used(tmp_path: Path) -> None:
    local, offsite = LocalStorage("local", tmp_path), LocalStorage("offsite", tmp_path)
    storages, links = _with_chain([local, offsite], BACKUPS, SECOND)
    assert [s.name for s in storages] == ["offsite"] and [m.id for m in links] == [FULL, FIRST, SECOND]
    with pytest.raises(BackupNotFound, match="cannot be restored from local"):
        _with_chain([local], BACKUPS, SECOND)
