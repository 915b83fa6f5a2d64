"""When an incremental tier takes an incremental base backup, and on which backup it builds."""

from __future__ import annotations

from pathlib import Path

from dbguardian.backup.incremental import MAX_CHAIN, choose_parent, keep_backup_manifest, manifest_file, why_full
from dbguardian.catalog import AnyBackup, Backup, PhysicalManifest
from dbguardian.catalog.manifest import parse_manifest
from tests.unit.test_manifest import encoded, physical

SYSTEM = "7441218365236633629"


def base(backup_id: str, *storages: str, chain: list[str] | None = None, system: str = SYSTEM) -> AnyBackup:
    parent = chain[-1] if chain else None
    fields = physical(id=backup_id, format=3 if parent else 2, incremental_of=parent, chain=chain or [],
                      system_identifier=system, objects={})  # fmt: skip
    return Backup(parse_manifest(encoded(fields)), list(storages))


def manifest(record: AnyBackup) -> PhysicalManifest:
    assert isinstance(record.manifest, PhysicalManifest)
    return record.manifest


NEWEST, OLDER = "20261122T030000.000000Z-0002", "20261121T030000.000000Z-0001"


def test_the_parent_is_the_newest_of_the_cluster_on_every_storage() -> None:
    everywhere = base(OLDER, "local", "offsite")
    only_local = base(NEWEST, "local")
    assert choose_parent([only_local, everywhere], SYSTEM, ["local", "offsite"]) == everywhere.manifest
    assert choose_parent([only_local, everywhere], SYSTEM, ["local"]) == only_local.manifest
    other_cluster = base(NEWEST, "local", "offsite", system="1")
    assert choose_parent([other_cluster, everywhere], SYSTEM, ["local", "offsite"]) == everywhere.manifest
    assert choose_parent([other_cluster], SYSTEM, ["local"]) is None


def test_a_full_backup_is_due_and_says_why() -> None:
    parent = manifest(base(NEWEST, "local", chain=[OLDER]))
    assert why_full(18, "on", parent, True) is None
    assert why_full(16, "on", parent, True) == "PostgreSQL 16 has no incremental base backups (17 and newer have)"
    assert str(why_full(17, "off", parent, True)).startswith("summarize_wal is off")
    assert str(why_full(17, None, parent, True)).startswith("summarize_wal is off")
    assert str(why_full(18, "on", None, True)).startswith("no base backup of this cluster")
    assert why_full(18, "on", parent, False) == f"the backup_manifest of {NEWEST} is not on this host"
    ids = [f"20261101T0300{index:02d}.000000Z-00{index:02d}" for index in range(MAX_CHAIN)]
    longest = manifest(base(ids[-2], "local", chain=ids[: MAX_CHAIN - 2]))  # a new one would be link MAX_CHAIN
    assert why_full(18, "on", longest, True) is None
    too_long = manifest(base(ids[-1], "local", chain=ids[: MAX_CHAIN - 1]))
    assert (
        why_full(18, "on", too_long, True) == f"the chain has reached {MAX_CHAIN} base backups (a full one starts the next)"
    )


def test_backup_manifests_are_kept_owner_only_and_only_the_newest(tmp_path: Path) -> None:
    ids = [f"20261101T0300{index:02d}.000000Z-00{index:02d}" for index in range(20)]
    for backup_id in ids:
        keep_backup_manifest(tmp_path, "app", backup_id, b"{}")
    kept = sorted(path.name for path in manifest_file(tmp_path, "app", ids[0]).parent.iterdir())
    assert kept == [f"{backup_id}.backup_manifest" for backup_id in ids[-16:]]
    newest = manifest_file(tmp_path, "app", ids[-1])
    assert newest.stat().st_mode & 0o777 == 0o600 and newest.parent.stat().st_mode & 0o777 == 0o700
