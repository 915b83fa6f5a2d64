"""`wal setup` advice and the per-storage archive state (pure parts of archiving/setup.py and status.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dbguardian.archiving.setup import advise, wal_push_command
from dbguardian.archiving.status import scan_spool, storage_wal
from dbguardian.catalog.archive import ArchivedWal
from dbguardian.catalog.manifest import PhysicalManifest

SPOOL = Path("/var/lib/dbguardian/wal/app")
GOOD_15 = {
    "server_version_num": "150010",
    "wal_level": "replica",
    "archive_mode": "on",
    "archive_library": "basic_archive",
    "archive_command": "",
    "basic_archive.archive_directory": str(SPOOL),
    "archive_timeout": "60",
}
PUSH = "dbguardian wal-push %p"


def failing(settings: dict[str, str | None]) -> dict[str, str | None]:
    return {a.setting: a.current for a in advise(settings, SPOOL, timedelta(minutes=5), wal_push=PUSH) if not a.ok}


def test_a_matching_15_server_needs_nothing_and_gets_the_basic_archive_lines() -> None:
    advice = advise(GOOD_15, SPOOL, timedelta(minutes=5), wal_push=PUSH)
    assert all(item.ok for item in advice)
    assert [item.line for item in advice] == [
        "wal_level = replica",
        "archive_mode = on",
        "archive_library = 'basic_archive'",
        f"basic_archive.archive_directory = '{SPOOL}'",
        "archive_timeout = 60",
    ]


def test_each_wrong_setting_is_named_with_what_it_is_now() -> None:
    assert failing({**GOOD_15, "archive_mode": "off"}) == {"archive_mode": "off"}
    assert failing({**GOOD_15, "wal_level": "minimal"}) == {"wal_level": "minimal"}
    assert failing({**GOOD_15, "archive_library": ""}) == {"archive_library": ""}
    assert failing({**GOOD_15, "basic_archive.archive_directory": None}) == {"basic_archive.archive_directory": None}
    assert failing({**GOOD_15, "basic_archive.archive_directory": "/elsewhere"}) == {
        "basic_archive.archive_directory": "/elsewhere"
    }
    assert failing({**GOOD_15, "archive_timeout": "0"}) == {"archive_timeout": "0"}
    assert failing({**GOOD_15, "archive_timeout": "3600"}) == {"archive_timeout": "3600"}  # beyond rpo_target


def test_13_and_14_use_wal_push_and_15_accepts_it_too() -> None:
    old = {**GOOD_15, "server_version_num": "140011", "archive_library": None,
           "basic_archive.archive_directory": None, "archive_command": ""}  # fmt: skip
    advice = advise(old, SPOOL, timedelta(minutes=5), wal_push=PUSH)
    assert [a.line for a in advice if not a.ok] == ["archive_command = 'dbguardian wal-push %p'"]
    assert failing({**old, "archive_command": PUSH}) == {}
    assert failing({**GOOD_15, "archive_library": "", "archive_command": PUSH}) == {}


def test_the_archive_command_names_policy_and_target_only_when_needed() -> None:
    assert wal_push_command(None, None) == "dbguardian wal-push %p"
    assert wal_push_command(Path("/etc/x y.yaml"), "app") == "dbguardian --policy '/etc/x y.yaml' wal-push --target app %p"
    # The archiver runs it with the server's PATH: `wal setup` names the executable by its absolute path.
    wrapped = wal_push_command(None, None, ["/opt/dbg env/bin/dbguardian"])
    assert wrapped == "'/opt/dbg env/bin/dbguardian' wal-push %p"


def test_a_quote_in_the_spool_path_is_doubled() -> None:
    advice = advise({**GOOD_15, "basic_archive.archive_directory": None}, Path("/srv/o'wal"),
                    timedelta(minutes=5), wal_push=PUSH)  # fmt: skip
    assert "basic_archive.archive_directory = '/srv/o''wal'" in [a.line for a in advice]


NOW = datetime(2026, 12, 4, tzinfo=UTC)


def archived(*names: str) -> list[ArchivedWal]:
    return [
        ArchivedWal(name, f"app/wal/{name[:8]}/{name}.zst", ".zst", 100, NOW + timedelta(seconds=i), int(name[:8], 16))
        for i, name in enumerate(names)
    ]


def base(start_lsn: str, timeline: int = 1) -> PhysicalManifest:
    return PhysicalManifest.model_validate({
        "format": 2, "kind": "physical", "id": "20261204T000000.000000Z-1b0f", "target": "app", "tier": "base",
        "database": "app", "server_version": "15.10", "dbguardian_version": "0.2", "host": "h",
        "started_at": NOW, "finished_at": NOW, "duration_seconds": 1, "raw_size_bytes": 1, "size_bytes": 1,
        "sha256": "0" * 64, "compression": {"algorithm": "zstd", "level": 3}, "encryption": None,
        "storage": ["local"], "objects": {}, "start_lsn": start_lsn, "stop_lsn": start_lsn, "timeline": timeline,
        "system_identifier": "7000000000000000001", "pg_version": 15,
    })  # fmt: skip


def test_gaps_count_from_the_oldest_base_backup_not_from_older_wal() -> None:
    wal = archived("000000010000000000000002", "000000010000000000000004", "000000010000000000000005",
                   "000000010000000000000007")  # fmt: skip
    # From the base backup's start (segment 4): 6 is missing; 3 (before it) does not matter.
    state = storage_wal(wal, [base("0/4000028")], "000000010000000000000007")
    assert (state.gap_count, state.gaps) == (1, ("000000010000000000000006",))
    assert state.newest_segment == "000000010000000000000007" and state.holds_last_archived
    # Without a base backup: from the first archived segment.
    assert storage_wal(wal, [], None).gaps == ("000000010000000000000003", "000000010000000000000006")
    # The base backup's own start segment missing is a gap too.
    assert storage_wal(wal[2:], [base("0/4000028")], None).gaps == ("000000010000000000000004", "000000010000000000000006")


def test_timelines_are_judged_separately_and_history_files_are_not_segments() -> None:
    wal = archived("000000010000000000000003", "000000010000000000000004", "00000002.history",
                   "000000020000000000000004", "000000020000000000000005")  # fmt: skip
    state = storage_wal(wal, [base("0/3000028")], "000000020000000000000005")
    assert state.gap_count == 0
    assert state.newest_segment == "000000020000000000000005"


def test_spool_scan_counts_finished_files_only(tmp_path: Path) -> None:
    assert scan_spool(tmp_path / "missing").files == 0
    (tmp_path / "000000010000000000000003").write_bytes(b"x" * 10)
    (tmp_path / "00000002.history").write_bytes(b"y" * 5)
    (tmp_path / ".000000010000000000000004.tmp-1-ab").write_bytes(b"z" * 100)
    state = scan_spool(tmp_path)
    assert (state.files, state.bytes) == (2, 15)
    assert state.oldest_name in {"000000010000000000000003", "00000002.history"}


def test_a_segment_still_in_the_spool_is_not_a_gap() -> None:
    wal = archived("000000010000000000000004", "000000010000000000000006")
    assert storage_wal(wal, [base("0/4000028")], None).gaps == ("000000010000000000000006"[:-1] + "5",)
    assert storage_wal(wal, [base("0/4000028")], None, waiting=["000000010000000000000005"]).gap_count == 0


def test_summarize_wal_is_advised_for_incremental_tiers_from_17_on() -> None:
    spool = Path("/var/lib/dbguardian/spool/app")
    settings_17: dict[str, str | None] = {**GOOD_15, "server_version_num": "170004", "summarize_wal": "off"}
    advice = {
        item.setting: item for item in advise(settings_17, spool, timedelta(minutes=5), wal_push=PUSH, incremental=True)
    }
    assert advice["summarize_wal"].line == "summarize_wal = on" and not advice["summarize_wal"].ok
    on = advise({**settings_17, "summarize_wal": "on"}, spool, timedelta(minutes=5), wal_push=PUSH, incremental=True)
    assert all(item.ok for item in on if item.setting == "summarize_wal")
    assert "summarize_wal" not in {item.setting for item in advise(settings_17, spool, timedelta(minutes=5), wal_push=PUSH)}
    assert "summarize_wal" not in {
        item.setting for item in advise(GOOD_15, spool, timedelta(minutes=5), wal_push=PUSH, incremental=True)
    }
