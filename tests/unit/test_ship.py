"""The shipper's and fetcher's pure decisions, and ship passes over a spool of made-up WAL files on local storages."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbguardian.archiving.fetch import check_wal_file, following, stale_prefetched
from dbguardian.archiving.ship import missing_storages, removable, ship_order, ship_spool
from dbguardian.errors import PipelineError
from dbguardian.policy import Policy, parse_policy
from dbguardian.spool import is_wal_file_name

MiB = 1024 * 1024


def test_ship_order_takes_wal_files_only_in_name_order() -> None:
    names = [
        "000000020000000000000004",
        ".000000010000000000000003.tmp-12-ab",  # wal-push's temp file
        "archtemp.000000010000000000000009.123.456",  # basic_archive's temp file
        "00000002.history",
        "000000010000000000000003",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000002",
        "000000010000000000000003.partial",
        "README",
    ]
    assert ship_order(names) == [
        "000000010000000000000002",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000003",
        "000000010000000000000003.partial",
        "00000002.history",  # before the first segment of its timeline
        "000000020000000000000004",
    ]
    assert ship_order(names, until="000000010000000000000003") == [
        "000000010000000000000002",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000003",
    ]


_SUFFIX = {"segment": "", "partial": ".partial", "backup": ".00000028.backup"}


def _wal_name(tli: int, log: int, seg: int, kind: str) -> str:
    return f"{tli:08X}.history" if kind == "history" else f"{tli:08X}{log:08X}{seg:08X}{_SUFFIX[kind]}"


wal_names = st.builds(
    _wal_name, st.integers(2, 3), st.integers(0, 2), st.integers(0, 255), st.sampled_from([*_SUFFIX, "history"])
)


@given(st.lists(st.one_of(wal_names, st.text(max_size=30)), max_size=40), st.one_of(st.none(), wal_names))
def test_ship_order_is_a_sorted_subset_of_wal_names(names: list[str], until: str | None) -> None:
    chosen = ship_order(names, until)
    assert chosen == sorted(chosen)
    assert all(is_wal_file_name(name) and name in names for name in chosen)
    assert set(chosen) == {name for name in names if is_wal_file_name(name) and (until is None or name <= until)}
    if until is not None:
        assert all(name <= until for name in chosen)


def test_a_spool_file_goes_only_when_every_storage_has_it() -> None:
    assert removable(["a", "b"], {"a", "b"})
    assert not removable(["a", "b"], {"a"})
    assert not removable([], set())  # a target without storages never deletes WAL
    assert missing_storages(["a", "b", "c"], {"b"}) == ["a", "c"]


def header(pageaddr: int, seg_size: int = 16 * MiB, info: int = 0x0002) -> bytes:
    return struct.pack("<HHIQI4xQII", 0xD110, info, 1, pageaddr, 0, 7_000_000_000_000_000_000, seg_size, 8192)


def test_segment_check_reads_the_first_page_header() -> None:
    name = "000000010000000A000000FE"
    start = (0xA << 32) | (0xFE * 16 * MiB)
    check_wal_file(name, header(start), 16 * MiB)
    check_wal_file(name + ".partial", header(start), 16 * MiB)
    with pytest.raises(PipelineError, match="truncated"):
        check_wal_file(name, header(start), 8 * MiB)
    with pytest.raises(PipelineError, match="another segment"):
        check_wal_file(name, header(start + 16 * MiB), 16 * MiB)
    with pytest.raises(PipelineError, match="long header"):
        check_wal_file(name, header(start, info=0), 16 * MiB)
    with pytest.raises(PipelineError, match="segment size"):
        check_wal_file(name, header(start, seg_size=12345), 12345)
    with pytest.raises(PipelineError, match="no WAL segment"):
        check_wal_file(name, b"short", 5)
    # 64 MiB segments (initdb --wal-segsize=64): 64 per 4 GiB, the size is read from the header.
    name64 = "000000010000000A0000003E"
    check_wal_file(name64, header((0xA << 32) | (0x3E * 64 * MiB), 64 * MiB), 64 * MiB)
    # History files and backup labels are text of any length.
    check_wal_file("00000002.history", b"1\t0/3000000\tno recovery target specified\n", 40)
    check_wal_file("000000010000000000000002.00000028.backup", b"START WAL LOCATION", 18)


def test_prefetch_names_and_what_recovery_has_passed() -> None:
    assert following("0000000100000000000000FF", 2) == ["000000010000000100000000", "000000010000000100000001"]
    assert following("00000002.history", 4) == []
    assert following("000000010000000000000001", 0) == []
    names = [
        "000000010000000000000003",
        "000000010000000000000005",
        "000000020000000000000001",
        ".000000010000000000000006.tmp-1-ab",
        "000000010000000000000004",
    ]
    assert stale_prefetched(names, "000000010000000000000004") == [
        "000000010000000000000003",
        ".000000010000000000000006.tmp-1-ab",
    ]


# ----------------------------------------------------------------------------- passes on local storages


def make_policy(tmp_path: Path, storages: dict[str, Path], **wal: Any) -> Policy:
    return parse_policy(
        {
            "version": 1,
            "state_dir": str(tmp_path / "state"),
            "storage": {name: {"type": "local", "path": str(path)} for name, path in storages.items()},
            "targets": {
                "app": {
                    "dsn": "postgresql://backup@127.0.0.1:5432/app",
                    "storage": list(storages),
                    "wal": {"spool": str(tmp_path / "spool"), "compression": {"algorithm": "zstd", "level": 1}, **wal},
                }
            },
        }
    )


def fill_spool(spool: Path, count: int, first: int = 1) -> list[str]:
    spool.mkdir(exist_ok=True)
    names = []
    for number in range(first, first + count):
        name = f"0000000100000000{number:08X}"
        (spool / name).write_bytes(bytes([number % 256]) * 65536)
        names.append(name)
    (spool / ".000000010000000000000099.tmp-1-ab").write_bytes(b"partial copy")
    return names


def stored(root: Path) -> list[str]:
    folder = root / "app" / "wal" / "00000001"
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def test_concurrent_passes_write_each_file_once_and_empty_the_spool(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, {"a": tmp_path / "a", "b": tmp_path / "b"}, parallel=3)
    names = fill_spool(tmp_path / "spool", 8)

    async def two() -> list[Any]:
        return list(await asyncio.gather(ship_spool(policy, "app"), ship_spool(policy, "app")))

    first, second = asyncio.run(two())
    assert sorted(set(first.shipped) | set(second.shipped)) == names
    assert first.conflicts == second.conflicts == {}
    for storage in ("a", "b"):
        assert first.written.get(storage, 0) + second.written.get(storage, 0) == len(names)
        assert stored(tmp_path / storage) == [name + ".zst" for name in names]
    assert [path.name for path in (tmp_path / "spool").iterdir()] == [".000000010000000000000099.tmp-1-ab"]


def test_until_storages_skip_and_the_present_cache(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, {"a": tmp_path / "a", "b": tmp_path / "b"})
    names = fill_spool(tmp_path / "spool", 4)
    present: set[tuple[str, str]] = set()

    only_a = asyncio.run(ship_spool(policy, "app", storages=["a"], present=present, until=names[1]))
    assert only_a.shipped == [] and only_a.waiting == names[:2] and only_a.attempted == ["a"]
    assert stored(tmp_path / "a") == [name + ".zst" for name in names[:2]] and stored(tmp_path / "b") == []
    assert present == {("a", names[0]), ("a", names[1])}

    # The cache answers for a: the objects are not looked up again (a removed object is not noticed).
    (tmp_path / "a" / "app" / "wal" / "00000001" / f"{names[0]}.zst").unlink()
    both = asyncio.run(ship_spool(policy, "app", present=present, skip=[names[3]]))
    assert both.shipped == names[:3] and both.waiting == [names[3]]
    assert both.written == {"a": 1, "b": 3}
    assert present == set()  # entries leave with their spool file
    assert stored(tmp_path / "a") == [name + ".zst" for name in names[1:3]]
    assert both.spool_files == 1 and both.spool_bytes == 65536  # temp files are not WAL


def test_stop_starts_no_new_file(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, {"a": tmp_path / "a"}, parallel=1)
    names = fill_spool(tmp_path / "spool", 3)
    stop = asyncio.Event()
    stop.set()
    report = asyncio.run(ship_spool(policy, "app", stop=stop))
    assert report.shipped == [] and report.waiting == names and stored(tmp_path / "a") == []


def test_missing_spool_is_an_empty_one(tmp_path: Path) -> None:
    policy = make_policy(tmp_path, {"a": tmp_path / "a"})
    report = asyncio.run(ship_spool(policy, "app"))
    assert report.shipped == report.waiting == [] and report.spool_files == 0


def test_walfile_segment_arithmetic_agrees_with_catalog_wal() -> None:
    from dbguardian.catalog.wal import parse_segment_name
    from dbguardian.walfile import segment_start

    for size in (1 << 20, 16 << 20, 1 << 30):
        for name in ("000000010000000000000001", "0000000300000A2B000000FF"[:16] + f"{(1 << 32) // size - 1:08X}"):
            assert segment_start(name, size) == parse_segment_name(name, size).start_lsn(size)
    assert segment_start("00000002.history", 16 << 20) is None


def test_the_cli_serves_a_prefetched_segment_without_loading_the_policy(tmp_path: Path) -> None:
    import subprocess
    import sys

    name = "000000010000000000000003"
    cache = tmp_path / "pg_wal" / ".dbguardian-prefetch"
    cache.mkdir(parents=True)
    data = header(3 * 16 * MiB) + bytes(16 * MiB - 40)
    (cache / name).write_bytes(data)
    code = "\n".join([
        "import sys, dbguardian.entry as e",
        "sys.argv = ['dbguardian', '--policy', '/nonexistent', 'wal-fetch', *sys.argv[1:]]",
        "try:",
        "    e.main()",
        "finally:",
        "    loaded = sorted(m for m in sys.modules if m.startswith(('pydantic', 'dbguardian.policy', 'click')))",
        "    print(loaded, file=sys.stderr)",
    ])  # fmt: skip
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    result = subprocess.run([sys.executable, "-c", code, name, str(dest)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == data and not (cache / name).exists()
    assert result.stderr.strip().splitlines()[-1] == "[]"  # neither click nor pydantic nor the policy was imported
    # Not prefetched: the slow path, which needs the policy (missing here: exit 126, so recovery stops).
    again = subprocess.run([sys.executable, "-c", code, "000000010000000000000004", str(dest)], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert again.returncode == 126 and "cannot read /nonexistent" in again.stderr
