"""The manifest model: kinds, formats (old ones read, newer ones refused), typed parts, validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from dbguardian.catalog.manifest import (
    MANIFEST_FORMAT,
    WRITTEN_FORMAT,
    Compression,
    Encryption,
    InvalidManifest,
    LogicalManifest,
    PhysicalManifest,
    UnsupportedManifestFormat,
    encode_manifest,
    parse_manifest,
)
from dbguardian.catalog.wal import parse_lsn
from tests.support.backups import LAYOUT_V1_MANIFEST

BACKUP_ID = "20261122T020000.000001Z-3fa1"
SHA = "a" * 64


def stored(key: str) -> dict[str, Any]:
    return {"key": key, "size_bytes": 40, "sha256": SHA, "raw_size_bytes": 100}


def common(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "id": BACKUP_ID,
        "target": "app",
        "tier": "daily",
        "database": "app",
        "server_version": "15.18",
        "dbguardian_version": "0.2.0",
        "host": "db1",
        "started_at": "2026-11-22T02:00:00.000001Z",
        "finished_at": "2026-11-22T02:05:00Z",
        "duration_seconds": 300.0,
        "raw_size_bytes": 100,
        "size_bytes": 40,
        "sha256": SHA,
        "compression": {"algorithm": "zstd", "level": 3},
        "encryption": None,
        "storage": ["local"],
        "objects": {
            "base": {"key": f"app/{BACKUP_ID}/base.tar.zst", "size_bytes": 40, "sha256": SHA, "raw_size_bytes": 100}
        },
    }
    fields.update(changes)
    return fields


FULL = "20261120T030000.000000Z-0001"
OTHER = "20261121T030000.000000Z-0002"


def physical(**changes: Any) -> dict[str, Any]:
    fields = common(kind="physical", start_lsn="0/2000028", stop_lsn="0/2000100", timeline=1,
                    system_identifier="7441218365236633629", pg_version=15)  # fmt: skip
    fields.update(changes)
    return fields


def logical(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(LAYOUT_V1_MANIFEST.read_text())
    fields.update(changes)
    return fields


def encoded(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields).encode()


def test_todays_manifest_reads_as_logical() -> None:
    manifest = parse_manifest(LAYOUT_V1_MANIFEST.read_bytes())
    assert isinstance(manifest, LogicalManifest)
    assert (manifest.format, manifest.kind) == (1, "logical")
    assert manifest.compression == Compression(algorithm="zstd", level=3)
    assert manifest.encryption is None
    assert [t.qualified for t in manifest.tables] == ["public.notes", "shop.customers", "shop.orders"]
    assert sum(t.rows for t in manifest.tables) == 17
    assert set(manifest.objects) == {"dump", "globals"}
    assert manifest.consistent_at == manifest.started_at


def test_new_logical_manifest_is_written_as_format_2_with_its_kind_and_the_old_json_shapes() -> None:
    old = json.loads(LAYOUT_V1_MANIFEST.read_text())
    manifest = parse_manifest(LAYOUT_V1_MANIFEST.read_bytes())
    assert isinstance(manifest, LogicalManifest)
    current = LogicalManifest.model_validate({**manifest.model_dump(), "format": WRITTEN_FORMAT})
    written = json.loads(encode_manifest(current))
    assert (written["format"], written["kind"]) == (2, "logical")
    assert list(written)[:3] == ["format", "kind", "id"]
    assert written["compression"] == old["compression"]
    # Fields added since (older readers ignore them) take the value that describes the old backup.
    assert {k: v for k, v in written.items() if k != "kind"} == {**old, "format": 2, "row_counts_from": "snapshot"}
    assert parse_manifest(encode_manifest(current)) == current


def test_encryption_is_typed_and_keeps_its_json_shape() -> None:
    age = {"method": "age", "recipients": ["age1xyz"]}
    manifest = parse_manifest(encoded(logical(encryption=age)))
    assert manifest.encryption == Encryption(method="age", recipients=["age1xyz"])
    assert json.loads(encode_manifest(manifest))["encryption"] == age
    # Callers written for the dict form keep working until they switch.
    assert manifest.encryption is not None and manifest.encryption.method == "age"
    with pytest.raises(InvalidManifest, match="encryption"):
        parse_manifest(encoded(logical(encryption={"method": "rot13", "recipients": []})))


def test_newer_format_is_refused_with_a_clear_error() -> None:
    with pytest.raises(UnsupportedManifestFormat) as refused:
        parse_manifest(encoded(logical(format=MANIFEST_FORMAT + 1, kind="logical")), "s3:app/x/manifest.json")
    assert str(refused.value) == (
        f"s3:app/x/manifest.json: manifest format {MANIFEST_FORMAT + 1} is newer than this dbguardian understands "
        f"(≤ {MANIFEST_FORMAT}); upgrade dbguardian"
    )
    with pytest.raises(ValueError, match="newer than this dbguardian understands"):
        LogicalManifest.model_validate(logical(format=MANIFEST_FORMAT + 1))


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (logical(format=None), "no manifest format number"),
        (logical(format="1"), "no manifest format number"),
        (logical(format=0), "manifest format 0 does not exist"),
        (logical(kind="physical"), "format 1 manifests are logical backups"),
        (common(), "no backup kind"),
        (common(kind="incremental"), "kind"),
        (logical(encoding="UTF8'; DROP DATABASE x; --"), "encoding"),
        (logical(lc_collate="C' TEMPLATE x"), "lc_collate"),
        (logical(id="../../etc"), "id"),
        (logical(target="a/b"), "target"),
        (logical(snapshot=None), "snapshot"),
        (logical(objects={"dump": stored("other/20261129T233345.263703Z-6b8c/dump.pgc.zst")}), "outside the backup"),
        (logical(objects={"dump": stored("app/20261129T233345.263703Z-6b8c/../x")}), "outside the backup"),
    ],
)
def test_invalid_manifests_are_refused(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidManifest, match=problem):
        parse_manifest(encoded(fields))


def test_not_json_is_refused() -> None:
    with pytest.raises(InvalidManifest, match="not JSON"):
        parse_manifest(b"{torn")
    with pytest.raises(InvalidManifest, match="not a JSON object"):
        parse_manifest(b"[1]")


def test_physical_manifest_is_defined_and_validated() -> None:
    manifest = parse_manifest(encoded(physical(start_lsn="16/b374d848", stop_lsn="16/B3750000")))
    assert isinstance(manifest, PhysicalManifest)
    assert (manifest.kind, manifest.start_lsn, manifest.timeline, manifest.pg_version) == ("physical", "16/B374D848", 1, 15)
    assert manifest.system_identifier == "7441218365236633629"
    assert manifest.consistent_at == datetime(2026, 11, 22, 2, 5, tzinfo=UTC)  # consistent once it finished
    assert parse_manifest(encode_manifest(manifest)) == manifest
    assert parse_lsn("16/B374D848") == 0x16_B374D848


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"start_lsn": "16-B374D848"}, "start_lsn"),
        ({"stop_lsn": "0/1000000"}, "stop_lsn 0/1000000 is before start_lsn"),
        ({"timeline": 0}, "timeline"),
        ({"system_identifier": "-1"}, "system_identifier"),
        ({"pg_version": 9}, "pg_version"),
        ({"format": 1}, "format 1 manifests are logical backups"),
        ({"pg_dump_version": "x", "start_lsn": None}, "start_lsn"),
        ({"format": 2, "incremental_of": FULL, "chain": [FULL]}, "incremental base backups need manifest format 3"),
        ({"format": 3, "incremental_of": FULL, "chain": []}, "does not end with incremental_of"),
        ({"format": 3, "incremental_of": FULL, "chain": [FULL, OTHER]}, "does not end with incremental_of"),
        ({"format": 3, "incremental_of": "../x", "chain": ["../x"]}, "not a backup id"),
        ({"format": 3, "chain": [FULL]}, "a full base backup has no chain"),
    ],
)
def test_invalid_physical_manifests_are_refused(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidManifest, match=problem):
        parse_manifest(encoded(physical(**changes)))


def test_an_incremental_names_its_chain_and_is_format_3() -> None:
    manifest = parse_manifest(encoded(physical(format=3, incremental_of=OTHER, chain=[FULL, OTHER])))
    assert isinstance(manifest, PhysicalManifest)
    assert (manifest.incremental_of, manifest.chain) == (OTHER, [FULL, OTHER])
    assert json.loads(encode_manifest(manifest))["format"] == 3
    full = parse_manifest(encoded(physical()))
    assert isinstance(full, PhysicalManifest) and full.incremental_of is None and full.chain == []
