"""WAL arithmetic: names checked against PostgreSQL 15, timeline histories, gaps, and WAL retention's invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.catalog.wal import (
    DEFAULT_SEGMENT_SIZE,
    BaseBackupWal,
    Segment,
    TimelineSpan,
    TimelineSwitch,
    chain_is_complete,
    check_segment_size,
    classify,
    format_lsn,
    missing_segments,
    next_segment_name,
    parse_history,
    parse_lsn,
    parse_segment_name,
    previous_segment_name,
    required_segments,
    segment_of_lsn,
    segments_on_path,
    timeline_path,
    wal_to_delete,
)

MIB = 1 << 20
SIZES = [MIB << shift for shift in range(11)]

# pg_walfile_name_offset() of PostgreSQL 15 (clusters made with initdb --wal-segsize=N, timeline 1).
PG15_NAMES = [
    ("16/B374D848", 1 * MIB, "000000010000001600000B37", 317512),
    ("16/B374D848", 16 * MIB, "0000000100000016000000B3", 7657544),
    ("16/B374D848", 64 * MIB, "00000001000000160000002C", 57989192),
    ("16/B374D848", 1024 * MIB, "000000010000001600000002", 863295560),
    ("0/3000028", 16 * MIB, "000000010000000000000003", 0x28),
    ("0/3000028", 1 * MIB, "000000010000000000000030", 0x28),
    ("FFFFFFFF/FFFFFFFF", 16 * MIB, "00000001FFFFFFFF000000FF", 0xFFFFFF),
    ("0/FFFFFFFF", 1024 * MIB, "000000010000000000000003", 0x3FFFFFFF),
]


@pytest.mark.parametrize(("lsn", "size", "name", "offset"), PG15_NAMES)
def test_segment_names_match_postgresql_15(lsn: str, size: int, name: str, offset: int) -> None:
    segment = segment_of_lsn(1, parse_lsn(lsn), size)
    assert segment.name(size) == name
    assert parse_segment_name(name, size) == segment
    assert parse_lsn(lsn) - segment.start_lsn(size) == offset


def test_lsn_text() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert parse_lsn("0/3000028") == parse_lsn("0/03000028") == 0x3000028
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(0) == "0/0"
    for bad in ("", "16", "16/", "/1", "G/1", "123456789/0", "1/2/3", " 1/2"):
        with pytest.raises(ValueError, match="is not an LSN"):
            parse_lsn(bad)
    with pytest.raises(ValueError, match="not a 64-bit LSN"):
        format_lsn(1 << 64)


def test_segment_sizes() -> None:
    assert [check_segment_size(size) for size in SIZES] == SIZES
    for bad in (0, MIB // 2, 3 * MIB, 2048 * MIB, 16 * MIB + 1):
        with pytest.raises(ValueError, match="power of two between 1 MiB and 1 GiB"):
            check_segment_size(bad)


def test_log_rollover() -> None:
    assert next_segment_name("0000000100000000000000FE") == "0000000100000000000000FF"
    assert next_segment_name("0000000100000000000000FF") == "000000010000000100000000"
    assert previous_segment_name("000000010000000100000000") == "0000000100000000000000FF"
    assert next_segment_name("000000010000000000000FFF", MIB) == "000000010000000100000000"
    assert next_segment_name("000000010000000000000003", 1024 * MIB) == "000000010000000100000000"
    with pytest.raises(ValueError, match="first segment"):
        previous_segment_name("000000010000000000000000")
    with pytest.raises(ValueError, match="no WAL segment"):
        next_segment_name("00000001FFFFFFFF000000FF")


def test_names_that_are_not_segments() -> None:
    for bad in ("000000010000000000000100", "00000000000000000000000A", "0000000100000000000000ff", "1", ""):
        with pytest.raises(ValueError, match="not a WAL segment name"):
            parse_segment_name(bad)
    with pytest.raises(ValueError, match="for 1024 MiB segments"):
        parse_segment_name("000000010000000000000004", 1024 * MIB)


def test_classify_archive_files() -> None:
    segment = classify("0000000200000000000000A1")
    assert (segment.kind, segment.timeline, segment.segment) == ("segment", 2, Segment(2, 0xA1))
    partial = classify("0000000100000000000000A1.partial")
    assert (partial.kind, partial.segment) == ("partial", Segment(1, 0xA1))
    label = classify("000000010000000000000002.00000028.backup")
    assert (label.kind, label.segment, label.backup_offset) == ("backup", Segment(1, 2), 0x28)
    history = classify("0000000A.history")
    assert (history.kind, history.timeline, history.segment) == ("history", 10, None)
    for bad in (
        "00000001.history",
        "0000000100000000000000A1.zst",
        "000000010000000000000002.01000000.backup",
        "archive_status",
        "0000000100000000000000a1",
        "../0000000100000000000000A1",
        "0000000100000000000000A1.partial.partial",
    ):
        with pytest.raises(ValueError, match=r"WAL|timeline 1|beyond"):
            classify(bad)


HISTORY_3 = """1\t0/3000000\tno recovery target specified

# promoted again after a PITR drill
2\t0/5000A28\tat restore point "before migration"
"""


def test_history_and_timeline_path() -> None:
    switches = parse_history(HISTORY_3)
    assert switches == [TimelineSwitch(1, 0x3000000), TimelineSwitch(2, 0x5000A28)]
    path = timeline_path(3, {3: switches})
    assert path == [TimelineSpan(1, 0, 0x3000000), TimelineSpan(2, 0x3000000, 0x5000A28), TimelineSpan(3, 0x5000A28, None)]
    assert timeline_path(1, {}) == [TimelineSpan(1, 0, None)]
    with pytest.raises(ValueError, match="no history file for timeline 4"):
        timeline_path(4, {3: switches})
    with pytest.raises(ValueError, match="does not lead to it"):
        timeline_path(2, {2: switches})
    for bad in ("x\t0/1\tr", "1", "1\tnot-an-lsn", "2\t0/5\tr\n1\t0/6\tr"):
        with pytest.raises(ValueError, match=r"history line|not an LSN"):
            parse_history(bad)


def test_following_a_timeline_switch() -> None:
    """Old timeline up to the segment before the switch segment, the new one from there (the .partial is skipped)."""
    path = timeline_path(3, {3: parse_history(HISTORY_3)})
    names = [segment.name() for segment in segments_on_path(path, 2, 6)]
    assert names == [
        "000000010000000000000002",
        "000000020000000000000003",
        "000000020000000000000004",
        "000000030000000000000005",
        "000000030000000000000006",
    ]
    archived = [*names, "000000010000000000000005.partial", "000000010000000000000003"]
    assert missing_segments(archived, 3, 2, 6, path=path) == []
    assert missing_segments(archived[1:], 3, 2, 7, path=path) == [Segment(1, 2), Segment(3, 7)]


def test_required_segments_of_a_base_backup() -> None:
    # pg_backup_stop waits for the segment holding the byte before the stop LSN.
    assert required_segments(1, 0x2000028, 0x2000138) == [Segment(1, 2)]
    assert required_segments(1, 0x2000028, 0x4000000) == [Segment(1, 2), Segment(1, 3)]
    assert required_segments(1, 0x2000028, 0x4000001) == [Segment(1, 2), Segment(1, 3), Segment(1, 4)]
    archived = ["000000010000000000000002", "000000010000000000000003", "000000010000000000000002.00000028.backup"]
    assert chain_is_complete(archived, 1, 0x2000028, 0x4000000)
    assert not chain_is_complete(archived, 1, 0x2000028, 0x4000001)
    assert not chain_is_complete(archived, 2, 0x2000028, 0x2000138)


def names(timeline: int, numbers: range | list[int]) -> list[str]:
    return [Segment(timeline, n).name() for n in numbers]


def deleted(
    archived: list[str], retained: list[BaseBackupWal], histories: dict[int, list[TimelineSwitch]] | None = None
) -> list[str]:
    return [d.name for d in wal_to_delete(archived, retained, histories=histories) if d.delete]


def test_wal_retention_with_reasons() -> None:
    archived = [*names(1, range(1, 8)), "000000010000000000000004.00000028.backup", "00000002.history", *names(2, [6, 7])]
    oldest = BaseBackupWal("20261122T020000.000001Z-3fa1", 1, 0x4000028)
    decisions = {d.name: d for d in wal_to_delete(archived, [oldest, BaseBackupWal("b", 1, 0x6000028)])}
    assert sorted(name for name, d in decisions.items() if d.delete) == names(1, [1, 2, 3])
    assert decisions["000000010000000000000001"].reason == (
        "before 000000010000000000000004, the start of the oldest retained base backup 20261122T020000.000001Z-3fa1"
    )
    assert decisions["000000010000000000000004.00000028.backup"].reason == f"kept: needed by base backup {oldest.backup_id}"
    assert decisions["00000002.history"].reason == "kept: history files are never deleted"
    assert decisions["000000020000000000000006"].reason == "kept: no retained base backup reaches timeline 2"
    assert deleted(archived, []) == []
    assert {d.reason for d in wal_to_delete(archived, [])} >= {"kept: no retained base backup"}


def test_wal_retention_follows_timelines_branched_from_a_retained_backup() -> None:
    archived = [*names(1, range(1, 6)), "000000010000000000000006.partial", *names(2, range(6, 9))]
    retained = [BaseBackupWal("old", 1, 0x3000028), BaseBackupWal("new", 2, 0x8000028)]
    history = {2: [TimelineSwitch(1, 0x6000100)]}
    # Without the history, timeline 2 below the newer backup looks unneeded; with it, the old backup replays into it.
    assert deleted(archived, retained) == names(1, [1, 2]) + names(2, [6, 7])
    assert deleted(archived, retained, histories=history) == names(1, [1, 2])


# Property tests.

segment_sizes = st.sampled_from(SIZES)
segments = st.builds(Segment, st.integers(1, 0xFFFFFFFF), st.integers(0, (1 << 52) - 2))


@settings(max_examples=200, deadline=None)
@given(segments, segment_sizes)
def test_name_round_trip_and_next_previous_are_inverse(segment: Segment, size: int) -> None:
    segment = Segment(segment.timeline, segment.number % ((1 << 64) // size - 1))
    name = segment.name(size)
    assert parse_segment_name(name, size) == segment
    assert classify(name, size).segment == segment
    assert previous_segment_name(next_segment_name(name, size), size) == name
    if segment.number > 0:
        assert next_segment_name(previous_segment_name(name, size), size) == name
    assert segment_of_lsn(segment.timeline, segment.start_lsn(size) + size - 1, size) == segment
    lsn = segment.start_lsn(size)
    assert parse_lsn(format_lsn(lsn)) == lsn


# A small archive of timelines 1..3 (2 branched from 1 at segment 20, 3 from 2 at 30): either each timeline
# a run from its begin with a few holes (as archived), or any sets of segment numbers;
# Base backups anywhere on their timeline.
BEGINS = {1: 0, 2: 20, 3: 30}
runs = st.dictionaries(
    st.sampled_from(sorted(BEGINS)), st.tuples(st.integers(0, 45), st.sets(st.integers(0, 45), max_size=3)), min_size=1
).map(lambda runs: {tli: set(range(BEGINS[tli], end + 1)) - holes for tli, (end, holes) in runs.items()})
archives = st.one_of(runs, st.dictionaries(st.integers(1, 3), st.sets(st.integers(0, 45), max_size=30), min_size=1))
backups = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 45), st.integers(0, 0xFFFFFF)), max_size=5)


def archive_names(archive: dict[int, set[int]]) -> list[str]:
    files = [name for tli, numbers in archive.items() for name in names(tli, sorted(numbers))]
    return files + [f"{tli:08X}.history" for tli in archive if tli > 1]


@settings(max_examples=150, deadline=None)
@given(archives, backups, st.booleans())
def test_wal_retention_keeps_every_retained_backups_chain(
    archive: dict[int, set[int]], chosen: list[tuple[int, int, int]], with_history: bool
) -> None:
    archived = archive_names(archive)
    # A base backup starts on its timeline after the timeline began.
    starts = [(tli, max(number, BEGINS[tli]) * DEFAULT_SEGMENT_SIZE + offset) for tli, number, offset in chosen]
    retained = [BaseBackupWal(f"b{i}", tli, start) for i, (tli, start) in enumerate(starts)]
    histories = {
        2: [TimelineSwitch(1, 20 * DEFAULT_SEGMENT_SIZE)],
        3: [TimelineSwitch(1, 20 * DEFAULT_SEGMENT_SIZE), TimelineSwitch(2, 30 * DEFAULT_SEGMENT_SIZE)],
    }
    gone = set(deleted(archived, retained, histories=histories if with_history else None))
    left = [name for name in archived if name not in gone]
    assert all(name in left for name in archived if name.endswith(".history"))
    if not retained:
        assert gone == set()
    for backup in retained:
        newest = max(archive.get(backup.timeline, set()), default=-1)
        start = backup.start_lsn // DEFAULT_SEGMENT_SIZE
        # Retention never opens a gap: what was missing before is all that is missing after.
        assert missing_segments(left, backup.timeline, start, newest) == missing_segments(
            archived, backup.timeline, start, newest
        )
        if with_history:  # ... also on the timelines branched from the backup's timeline, along their path
            for timeline in (t for t in histories if any(s.parent == backup.timeline for s in histories[t])):
                path = timeline_path(timeline, histories)
                newest = max(archive.get(timeline, set()), default=-1)
                assert missing_segments(left, timeline, start, newest, path=path) == missing_segments(
                    archived, timeline, start, newest, path=path
                )
    # Planning again over what is left deletes nothing more.
    assert deleted(left, retained, histories=histories if with_history else None) == []


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 5), st.integers(0, 300), st.integers(0, 40), st.data(), segment_sizes)
def test_gaps_are_found_exactly_where_segments_were_removed(
    timeline: int, first: int, length: int, data: st.DataObject, size: int
) -> None:
    wanted = list(range(first, first + length + 1))
    removed = data.draw(st.sets(st.sampled_from(wanted)))
    kept = [Segment(timeline, n).name(size) for n in wanted if n not in removed]
    others = [Segment(timeline + 1, n).name(size) for n in wanted]  # another timeline's segments never fill a gap
    archived = kept + others + [f"{name}.partial" for name in others]
    assert missing_segments(archived, timeline, first, first + length, segment_size=size) == [
        Segment(timeline, n) for n in sorted(removed)
    ]


def test_segment_ranges_group_consecutive_segments_per_timeline() -> None:
    from dbguardian.catalog.wal import WalRange, segment_ranges

    assert segment_ranges([]) == []
    files = [
        "000000010000000000000001",
        "000000010000000000000002",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000004",
        "000000010000000100000000",
        "0000000100000000000000FF",
        "000000020000000000000005",
    ]
    assert segment_ranges(files) == [
        WalRange("000000010000000000000001", "000000010000000000000002", 2),
        WalRange("000000010000000000000004", "000000010000000000000004", 1),
        WalRange("0000000100000000000000FF", "000000010000000100000000", 2),
        WalRange("000000020000000000000005", "000000020000000000000005", 1),
    ]
