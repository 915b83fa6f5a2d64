"""The pure parts of base backups: the server checks, the tar scanner that reads LSNs from the stream,
the backup_label / backup_manifest parsers and the WAL a backup waits for."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbguardian.backup.basetar import (
    BackupLabel,
    BackupPosition,
    ManifestWalRange,
    TarError,
    TarScanner,
    backup_history_name,
    backup_position,
    needed_wal,
    parse_backup_label,
    parse_wal_ranges,
    stop_segment,
)
from dbguardian.backup.physical import ServerState, archive_wait_started, extra_tablespaces, server_problems
from dbguardian.catalog.wal import parse_lsn

MIB16 = 16 * 1024 * 1024

GOOD = ServerState(
    role="backup",
    superuser=False,
    replication=True,
    archive_mode="on",
    max_wal_senders=10,
    in_recovery=False,
    tablespaces=("pg_default", "pg_global"),
)

LABEL = """START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-12-04 13:48:38 UTC
LABEL: dbguardian 20261204T134838.000000Z-ab12
START TIMELINE: 1
"""

MANIFEST_END = b"""{ "Path": "global/pg_control", "Size": 8192, "Checksum-Algorithm": "CRC32C", "Checksum": "fd3b1a3b" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
],
"Manifest-Checksum": "8c1f8b1f3c7e"}
"""


# ----------------------------------------------------------------------------- server checks


def test_a_good_server_has_no_problems() -> None:
    assert server_problems(GOOD, "app") == []
    assert server_problems(replace(GOOD, archive_mode="always", replication=False, superuser=True), "app") == []


def test_archive_mode_off_names_the_fix() -> None:
    assert server_problems(replace(GOOD, archive_mode="off"), "app") == [
        "archive_mode is off: run `dbguardian wal setup app`"
    ]


def test_a_role_without_replication_is_refused_unless_superuser() -> None:
    [problem] = server_problems(replace(GOOD, replication=False), "app")
    assert "'backup' may not take base backups" in problem and "REPLICATION" in problem


def test_extra_tablespaces_are_named_and_refused() -> None:
    state = replace(GOOD, tablespaces=("pg_default", "pg_global", "fast_ssd", "archive"))
    [problem] = server_problems(state, "app")
    assert problem.startswith("tablespaces archive, fast_ssd outside the data directory")
    assert "not supported yet" in problem
    [single] = server_problems(replace(GOOD, tablespaces=("pg_default", "pg_global", "x")), "app")
    assert single.startswith("tablespace x outside")


def test_standby_and_no_wal_sender_are_refused() -> None:
    problems = server_problems(replace(GOOD, in_recovery=True, max_wal_senders=0), "app")
    assert len(problems) == 2
    assert any("max_wal_senders is 0" in problem for problem in problems)
    assert any("standby" in problem for problem in problems)


@given(
    archive_mode=st.sampled_from(["on", "always", "off"]),
    superuser=st.booleans(),
    replication=st.booleans(),
    senders=st.integers(0, 3),
    in_recovery=st.booleans(),
    extra=st.lists(st.sampled_from(["a", "b", "pg_default", "pg_global"]), unique=True),
)
def test_every_problem_is_reported_and_only_problems(
    archive_mode: str, superuser: bool, replication: bool, senders: int, in_recovery: bool, extra: list[str]
) -> None:
    state = ServerState("r", superuser, replication, archive_mode, senders, in_recovery, tuple(extra))
    expected = (
        (archive_mode == "off")
        + (not superuser and not replication)
        + (senders == 0)
        + in_recovery
        + bool(extra_tablespaces(extra))
    )
    assert len(server_problems(state, "t")) == expected


def test_extra_tablespaces_ignores_the_two_builtin_ones() -> None:
    assert extra_tablespaces(["pg_global", "z", "pg_default", "a"]) == ["a", "z"]
    assert extra_tablespaces(["pg_default", "pg_global"]) == []


# ----------------------------------------------------------------------------- tar scanner


def make_tar(members: list[tuple[str, bytes]], *, fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        directory = tarfile.TarInfo("base")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
        link = tarfile.TarInfo("pg_tblspc/1")
        link.type = tarfile.SYMTYPE
        link.linkname = "/somewhere"
        archive.addfile(link)
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def feed_in(scanner: TarScanner, data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(points):
        scanner.feed(data[start:end])


MEMBERS = [
    ("backup_label", LABEL.encode()),
    ("base/1/1259", b"x" * 70000),
    ("PG_VERSION", b"15\n"),
    ("global/pg_control", b"\0" * 8192),
    ("empty", b""),
    ("backup_manifest", b"A" * 200000 + MANIFEST_END),
]


@given(st.lists(st.integers(0, 1 << 20), max_size=40))
def test_scanner_keeps_the_named_members_whatever_the_chunking(cuts: list[int]) -> None:
    data = make_tar(MEMBERS)
    scanner = TarScanner({"backup_label": 4096, "PG_VERSION": 64, "backup_manifest": 1024, "empty": 10})
    feed_in(scanner, data, cuts)
    assert scanner.ended
    assert scanner.members == len(MEMBERS) + 2
    assert scanner.captured["backup_label"] == LABEL.encode()
    assert scanner.captured["PG_VERSION"] == b"15\n"
    assert scanner.captured["empty"] == b""
    assert scanner.captured["backup_manifest"] == (b"A" * 200000 + MANIFEST_END)[-1024:]
    assert scanner.sizes["backup_manifest"] == 200000 + len(MANIFEST_END)
    assert "base/1/1259" not in scanner.captured


def test_scanner_without_end_marker_is_not_ended() -> None:
    data = make_tar(MEMBERS)
    scanner = TarScanner({"PG_VERSION": 64})
    scanner.feed(data[: data.index(MANIFEST_END) + 10])  # cut inside the last member
    assert not scanner.ended


def test_scanner_refuses_what_is_not_tar() -> None:
    scanner = TarScanner({})
    with pytest.raises(TarError, match="not a tar stream"):
        scanner.feed(b"PGDMP" + b"\1" * 1000)


def test_scanner_reads_long_names_from_the_ustar_prefix() -> None:
    long_name = "base/" + "d" * 120 + "/backup_label_x"
    data = make_tar([(long_name, b"abc")])
    scanner = TarScanner({long_name: 10})
    scanner.feed(data)
    assert scanner.captured[long_name] == b"abc"


def test_scanner_reads_base256_sizes() -> None:
    from dbguardian.backup.basetar import _tar_number

    assert _tar_number(b"00000001750\0") == 0o1750
    assert _tar_number(bytes([0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00])) == 512
    assert _tar_number(b"\0" * 12) == 0


# ----------------------------------------------------------------------------- label, manifest, position


def test_backup_label_is_parsed() -> None:
    assert parse_backup_label(LABEL) == BackupLabel(
        parse_lsn("0/2000028"), "000000010000000000000002", 1, "dbguardian 20261204T134838.000000Z-ab12"
    )
    with pytest.raises(ValueError, match="lacks"):
        parse_backup_label("START TIMELINE: 1\n")


def test_wal_ranges_come_from_the_manifest_tail() -> None:
    assert parse_wal_ranges(MANIFEST_END) == [ManifestWalRange(1, parse_lsn("0/2000028"), parse_lsn("0/2000100"))]
    with pytest.raises(ValueError, match="no WAL-Ranges"):
        parse_wal_ranges(b'{"Files": []}')
    with pytest.raises(ValueError, match="unreadable"):
        parse_wal_ranges(b'"WAL-Ranges": [{"Timeline": 1}]')


def test_position_cross_checks_label_and_manifest() -> None:
    label = parse_backup_label(LABEL)
    ranges = parse_wal_ranges(MANIFEST_END)
    assert backup_position(label, ranges, label.label) == BackupPosition(1, 0x2000028, 0x2000100)
    with pytest.raises(ValueError, match="not 'dbguardian other'"):
        backup_position(label, ranges, "dbguardian other")
    with pytest.raises(ValueError, match="2 WAL ranges"):
        backup_position(label, [*ranges, ManifestWalRange(2, 0x3000000, 0x3000100)], label.label)
    with pytest.raises(ValueError, match="disagree"):
        backup_position(label, [ManifestWalRange(1, 0x2000000, 0x2000100)], label.label)
    with pytest.raises(ValueError, match="ends before"):
        backup_position(label, [ManifestWalRange(1, 0x2000028, 0x2000000)], label.label)


def test_the_needed_wal_is_start_to_stop_segment_and_the_backup_label() -> None:
    position = BackupPosition(1, parse_lsn("0/2000028"), parse_lsn("0/2000100"))
    assert backup_history_name(position, MIB16) == "000000010000000000000002.00000028.backup"
    assert needed_wal(position, MIB16) == ["000000010000000000000002", "000000010000000000000002.00000028.backup"]
    assert stop_segment(position, MIB16) == "000000010000000000000002"
    spanning = BackupPosition(3, parse_lsn("1/FF000100"), parse_lsn("2/01000000"))
    assert needed_wal(spanning, MIB16, history_file=False) == [
        "0000000300000001000000FF",
        "000000030000000200000000",
    ]
    assert stop_segment(spanning, MIB16) == "000000030000000200000000"
    # The label sorts right after the start segment: the archive's (and the shipper's) order.
    assert needed_wal(spanning, MIB16) == [
        "0000000300000001000000FF",
        "0000000300000001000000FF.00000100.backup",
        "000000030000000200000000",
    ]
    # With 1 MiB segments the same LSN lies in another segment (names depend on wal_segment_size).
    assert needed_wal(position, 1 << 20, history_file=False) == ["000000010000000000000020"]


def test_archive_wait_start_is_read_from_the_servers_warning() -> None:
    lines = [
        "pg_basebackup: checkpoint completed",
        "WARNING:  still waiting for all required WAL segments to be archived (60 seconds elapsed)",
        "WARNING:  still waiting for all required WAL segments to be archived (120 seconds elapsed)",
    ]
    assert archive_wait_started(lines[:1], {0: 5.0}) is None
    assert archive_wait_started(lines, {0: 5.0, 1: 100.0, 2: 160.0}) == 40.0
    assert archive_wait_started(lines, {0: 5.0}) is None


def test_manifest_end_fixture_is_json_shaped() -> None:
    # The fixture mirrors PostgreSQL 15's backup_manifest ending; its WAL-Ranges part is valid JSON.
    start = MANIFEST_END.index(b"[\n{")
    assert json.loads(MANIFEST_END[start : MANIFEST_END.index(b"]", start) + 1])[0]["Timeline"] == 1
