"""The object layout: every key is built and parsed by dbguardian.catalog.keys."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.catalog import keys
from dbguardian.catalog.wal import Segment, classify

BACKUP_ID = "20261122T020000.000001Z-3fa1"


def test_backup_keys() -> None:
    assert keys.backup_prefix("app", BACKUP_ID) == f"app/{BACKUP_ID}/"
    assert keys.manifest_key("app", BACKUP_ID) == f"app/{BACKUP_ID}/manifest.json"
    assert keys.dump_key("app", BACKUP_ID, ".zst") == f"app/{BACKUP_ID}/dump.pgc.zst"
    assert keys.globals_key("app", BACKUP_ID, ".gz.age") == f"app/{BACKUP_ID}/globals.sql.gz.age"
    assert keys.base_key("app", BACKUP_ID, ".zst") == f"app/{BACKUP_ID}/base.tar.zst"


def test_parse_backup_key() -> None:
    parsed = keys.parse_backup_key(f"app/{BACKUP_ID}/manifest.json")
    assert parsed is not None and parsed.is_manifest
    assert (parsed.target, parsed.backup_id, parsed.folder) == ("app", BACKUP_ID, f"app/{BACKUP_ID}/")
    dump = keys.parse_backup_key(keys.dump_key("app", BACKUP_ID, ".zst"))
    assert dump is not None and not dump.is_manifest
    for other in (
        "app/wal/00000001/000000010000000000000001.zst",
        "app/not-an-id/x",
        "_dbguardian/probe/h-1",
        f"app/{BACKUP_ID}",
    ):
        assert keys.parse_backup_key(other) is None


def test_wal_namespace_is_beside_the_backup_folders() -> None:
    assert keys.wal_key("app", "000000020000000A000000FE", ".zst") == "app/wal/00000002/000000020000000A000000FE.zst"
    assert keys.wal_key("app", "00000003.history") == "app/wal/00000003/00000003.history"
    assert keys.wal_key("app", "000000010000000000000002.00000028.backup").startswith("app/wal/00000001/")
    assert keys.wal_prefix("app") == "app/wal/"
    assert keys.wal_prefix("app", 10) == "app/wal/0000000A/"
    assert keys.is_wal_key("app/wal/00000001/000000010000000000000001")
    assert not keys.is_wal_key(keys.dump_key("app", BACKUP_ID, ""))
    assert not keys.is_backup_id(keys.WAL_DIR)  # a delimiter listing of app/ can tell the two apart
    with pytest.raises(ValueError, match="not a WAL file name"):
        keys.wal_key("app", "../../x")


def test_probe_key_lies_outside_every_target() -> None:
    key = keys.probe_key("db1", "00ff")
    assert key == "_dbguardian/probe/db1-00ff"
    assert keys.parse_backup_key(key) is None


def test_folder_names_from_either_form_of_list_dirs() -> None:
    assert keys.folder_name("app/", BACKUP_ID) == BACKUP_ID
    assert keys.folder_name("app/", f"app/{BACKUP_ID}/") == BACKUP_ID
    assert keys.folder_name("", "app/") == "app"


def test_the_backup_id_prefix_never_reaches_reserved_names() -> None:
    assert keys.backup_id_prefix("app", "2") == "app/2"
    for start in ("w", "", "_"):
        with pytest.raises(ValueError, match="backup ids start with a digit"):
            keys.backup_id_prefix("app", start)


def test_parse_wal_key() -> None:
    for name in (
        "000000020000000A000000FE",
        "00000003.history",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000005.partial",
    ):
        for suffix in ("", ".zst", ".gz", ".age", ".zst.gpg", ".gz.age"):
            parsed = keys.parse_wal_key(keys.wal_key("app", name, suffix))
            assert parsed is not None
            assert (parsed.target, parsed.file_name, parsed.suffix) == ("app", name, suffix)
            assert parsed.timeline == int(name[:8], 16)
    for other in (
        "app/wal/00000001/x",
        "app/wal/00000002/000000010000000000000001",  # under another timeline's folder
        "app/wal/00000001/000000010000000000000001.zst.tmp",
        "app/wal/00000001/000000010000000000000001.age.zst",
        "app/wal/000000010000000000000001",
        "app/wal/00000001/sub/000000010000000000000001",
        "/wal/00000001/000000010000000000000001",
        f"app/{BACKUP_ID}/manifest.json",
    ):
        assert keys.parse_wal_key(other) is None, other


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 0xFFFFFFFF),
    st.integers(0, (1 << 40) - 1),
    st.sampled_from(["", ".partial", ".00000028.backup"]),
    st.sampled_from(["", ".zst", ".gz.age"]),
)
def test_wal_key_round_trip(timeline: int, number: int, kind: str, suffix: str) -> None:
    name = Segment(timeline, number).name() + kind
    parsed = keys.parse_wal_key(keys.wal_key("app", name, suffix))
    assert parsed == keys.WalObjectKey("app", timeline, name, suffix)
    assert classify(parsed.file_name).timeline == timeline  # the catalog's WAL module reads what keys parsed
