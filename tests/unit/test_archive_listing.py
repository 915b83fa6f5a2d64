"""catalog/archive.py: the WAL namespace on a storage, listed and looked up by file name."""

from __future__ import annotations

import asyncio

import pytest

from dbguardian.catalog import keys
from dbguardian.catalog.archive import find_wal, list_wal, newest_segment, segment_names, suffix_codec, wal_suffix
from dbguardian.storage.memory import MemoryStorage

SEG1 = "000000010000000000000003"
SEG2 = "000000010000000000000004"


def stored(*names_and_suffixes: tuple[str, str]) -> MemoryStorage:
    storage = MemoryStorage()

    async def fill() -> None:
        for name, suffix in names_and_suffixes:
            await storage.put_bytes(keys.wal_key("app", name, suffix), name.encode())
        await storage.put_bytes("app/wal/00000001/" + SEG2 + ".zst.tmp-123", b"temporary upload")
        await storage.put_bytes("other/wal/00000001/" + SEG1 + ".zst", b"another target")
        await storage.put_bytes("app/20261201T000000.000000Z-abcd/manifest.json", b"{}")

    asyncio.run(fill())
    return storage


def test_listing_returns_wal_of_the_target_only_sorted() -> None:
    storage = stored((SEG2, ".zst.age"), (SEG1, ".zst"), ("00000002.history", ""))
    listed = asyncio.run(list_wal(storage, "app"))
    assert [(item.name, item.suffix, item.timeline) for item in listed] == [
        (SEG1, ".zst", 1),
        (SEG2, ".zst.age", 1),
        ("00000002.history", "", 2),
    ]
    assert segment_names(listed) == [SEG1, SEG2]
    assert [item.name for item in asyncio.run(list_wal(storage, "app", timeline=2))] == ["00000002.history"]


def test_find_wal_matches_the_exact_name_not_a_longer_one() -> None:
    storage = stored((SEG1 + ".00000028.backup", ".zst"), (SEG2, ".gz"))
    assert asyncio.run(find_wal(storage, "app", SEG1)) is None
    found = asyncio.run(find_wal(storage, "app", SEG2))
    assert found is not None and found.compression == "gzip" and found.encryption is None
    label = asyncio.run(find_wal(storage, "app", SEG1 + ".00000028.backup"))
    assert label is not None and label.key.endswith(".backup.zst")


def test_newest_segment_ignores_history_and_labels() -> None:
    storage = stored((SEG1, ".zst"), (SEG2, ".zst"))
    asyncio.run(storage.put_bytes(keys.wal_key("app", "00000002.history"), b"1\t0/3000000\tno recovery target\n"))
    newest = newest_segment(asyncio.run(list_wal(storage, "app")))
    assert newest is not None and newest.name == SEG2
    assert newest_segment([]) is None


@pytest.mark.parametrize(
    ("suffix", "codec"),
    [("", ("none", None)), (".zst", ("zstd", None)), (".gz.gpg", ("gzip", "gpg")), (".age", ("none", "age"))],
)
def test_suffix_round_trip(suffix: str, codec: tuple[str, str | None]) -> None:
    assert suffix_codec(suffix) == codec
    assert wal_suffix(*codec) == suffix


def test_unknown_suffix_is_refused() -> None:
    with pytest.raises(ValueError, match="not a WAL object suffix"):
        suffix_codec(".zst.tmp")
