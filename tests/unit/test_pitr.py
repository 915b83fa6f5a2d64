"""Point-in-time recovery decisions, pure: backup choice, target checks, settings rendering and quoting,
tar member safety."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbguardian.catalog import Backup, PhysicalManifest, StoredObject, keys, new_backup_id
from dbguardian.catalog.archive import ArchivedWal
from dbguardian.errors import BackupNotFound, OperationError, RestoreRefused, UsageError
from dbguardian.restore.physical import (
    RecoveryTarget,
    check_archive,
    check_member,
    check_target,
    choose_backup,
    extract_tar,
    make_target,
    parse_target_time,
    quote_conf,
    render_settings,
    restore_command,
    shell_word,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def physical(started: datetime, start_lsn: str, stop_lsn: str, suffix: str = "0001") -> Backup[PhysicalManifest]:
    backup_id = new_backup_id(started, suffix)
    base = StoredObject(key=keys.base_key("app", backup_id, ".zst"), size_bytes=1, sha256="b" * 64, raw_size_bytes=1)
    manifest = PhysicalManifest.model_validate(
        {
            "kind": "physical",
            "id": backup_id,
            "target": "app",
            "tier": "base",
            "database": "app",
            "server_version": "15.8",
            "dbguardian_version": "0",
            "host": "h",
            "started_at": started,
            "finished_at": started + timedelta(minutes=1),
            "duration_seconds": 60,
            "raw_size_bytes": 1,
            "size_bytes": 1,
            "sha256": "b" * 64,
            "compression": {"algorithm": "zstd", "level": 3},
            "storage": ["local"],
            "objects": {"base": base},
            "start_lsn": start_lsn,
            "stop_lsn": stop_lsn,
            "timeline": 1,
            "system_identifier": "7",
            "pg_version": 15,
        }
    )
    return Backup(manifest, ["local"])


OLD = physical(NOW - 3 * HOUR, "0/2000028", "0/2000100", "0001")
MID = physical(NOW - 2 * HOUR, "0/5000028", "0/5000100", "0002")
NEW = physical(NOW - 1 * HOUR, "0/9000028", "0/9000100", "0003")
ALL = [MID, NEW, OLD]


def at(moment: datetime) -> RecoveryTarget:
    return RecoveryTarget("time", moment.isoformat())


def segment(name: str, modified: datetime) -> ArchivedWal:
    return ArchivedWal(name, f"app/wal/00000001/{name}.zst", ".zst", 10, modified, 1)


# Backup choice.


def test_time_target_takes_the_newest_backup_that_ended_before_it() -> None:
    assert choose_backup(ALL, at(NOW - 90 * timedelta(minutes=1))).id == MID.id
    assert choose_backup(ALL, at(NOW)).id == NEW.id
    assert choose_backup(ALL, at(OLD.manifest.finished_at)).id == OLD.id


def test_time_target_before_every_backup_end_is_refused_naming_the_oldest() -> None:
    with pytest.raises(RestoreRefused, match=f"before the end of base backup {OLD.id}"):
        choose_backup(ALL, at(OLD.manifest.started_at + timedelta(seconds=30)))


def test_lsn_target_takes_the_newest_backup_stopped_at_or_before_it() -> None:
    assert choose_backup(ALL, RecoveryTarget("lsn", "0/8FFFFFF")).id == MID.id
    assert choose_backup(ALL, RecoveryTarget("lsn", "0/9000100")).id == NEW.id
    with pytest.raises(RestoreRefused, match="before the end of base backup"):
        choose_backup(ALL, RecoveryTarget("lsn", "0/2000000"))


def test_name_and_latest_take_the_newest_or_the_one_given() -> None:
    assert choose_backup(ALL, RecoveryTarget("name", "x")).id == NEW.id
    assert choose_backup(ALL, RecoveryTarget("latest")).id == NEW.id
    assert choose_backup(ALL, RecoveryTarget("latest"), OLD.id).id == OLD.id


def test_given_backup_must_end_before_the_target() -> None:
    with pytest.raises(RestoreRefused, match=NEW.id):
        choose_backup(ALL, at(NEW.manifest.started_at), NEW.id)
    with pytest.raises(BackupNotFound, match="no base backup 'nope'"):
        choose_backup(ALL, RecoveryTarget("latest"), "nope")
    with pytest.raises(BackupNotFound, match="TARGET --physical"):
        choose_backup([], RecoveryTarget("latest"))


@given(st.integers(min_value=-5 * 3600, max_value=2 * 3600))
def test_chosen_backup_always_ends_at_or_before_a_time_target(offset: int) -> None:
    moment = NOW + timedelta(seconds=offset)
    try:
        chosen = choose_backup(ALL, at(moment))
    except RestoreRefused:
        assert all(b.manifest.consistent_at > moment for b in ALL)
        return
    assert chosen.manifest.consistent_at <= moment
    assert not [b for b in ALL if chosen.manifest.consistent_at < b.manifest.consistent_at <= moment]


def test_check_target_accepts_the_backup_end_itself() -> None:
    check_target(NEW.manifest, at(NEW.manifest.finished_at))
    check_target(NEW.manifest, RecoveryTarget("lsn", NEW.manifest.stop_lsn))


# The archived WAL.


def test_time_past_the_newest_archived_segment_is_refused() -> None:
    newest = segment("000000010000000000000009", NOW - 30 * timedelta(minutes=1))
    check_archive(at(NOW - 31 * timedelta(minutes=1)), newest, NEW.manifest)
    with pytest.raises(RestoreRefused, match="past the archived WAL \\(newest segment 000000010000000000000009 archived at"):
        check_archive(at(NOW), newest, NEW.manifest)


def test_lsn_past_the_newest_segment_end_is_refused() -> None:
    newest = segment("00000001000000000000000A", NOW)
    check_archive(RecoveryTarget("lsn", "0/AFFFFFF"), newest, NEW.manifest)
    with pytest.raises(RestoreRefused, match="past the archived WAL"):
        check_archive(RecoveryTarget("lsn", "0/B000000"), newest, NEW.manifest)


def test_wal_the_backup_needs_must_be_archived() -> None:
    with pytest.raises(RestoreRefused, match="up to 000000010000000000000009"):
        check_archive(RecoveryTarget("latest"), segment("000000010000000000000008", NOW), NEW.manifest)
    with pytest.raises(RestoreRefused, match="newest archived segment: none"):
        check_archive(RecoveryTarget("latest"), None, NEW.manifest)
    check_archive(RecoveryTarget("latest"), segment("000000010000000000000009", NOW), NEW.manifest)


# Targets from the command line.


def test_make_target_parses_and_excludes() -> None:
    assert make_target() == RecoveryTarget("latest")
    assert make_target(to_latest=True) == RecoveryTarget("latest")
    assert make_target(to_time="2026-12-04T13:50:00Z") == RecoveryTarget("time", "2026-12-04T13:50:00+00:00")
    assert make_target(to_time="2026-12-04T14:50:00+01:00").value == "2026-12-04T13:50:00+00:00"
    assert make_target(to_lsn="0/3000060") == RecoveryTarget("lsn", "0/3000060")
    assert make_target(to_name="before migration") == RecoveryTarget("name", "before migration")
    with pytest.raises(UsageError, match="give one of"):
        make_target(to_time="2026-12-04T13:50:00Z", to_name="x")
    with pytest.raises(UsageError, match="give one of"):
        make_target(to_name="x", to_latest=True)
    with pytest.raises(UsageError, match="LSN"):
        make_target(to_lsn="3000060")


def test_time_without_zone_is_refused() -> None:
    with pytest.raises(UsageError, match="no time zone"):
        parse_target_time("2026-12-04T13:50:00")
    with pytest.raises(UsageError, match="not an ISO 8601 time"):
        parse_target_time("yesterday")
    assert parse_target_time("2026-12-04 13:50:00.5z") == datetime(2026, 12, 4, 13, 50, 0, 500000, tzinfo=UTC)


def test_restore_point_names() -> None:
    make_target(to_name="x" * 63)
    with pytest.raises(UsageError, match="1 to 63 bytes"):
        make_target(to_name="x" * 64)
    with pytest.raises(UsageError, match="1 to 63 bytes"):
        make_target(to_name="")
    with pytest.raises(UsageError, match="control characters"):
        make_target(to_name="a\nb")


# Settings.


def parse_conf(text: str) -> dict[str, str]:
    """A minimal postgresql.conf reader for quoted values (PostgreSQL's own rules: '' is a quote)."""
    values: dict[str, str] = {}
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        name, _, raw = line.partition(" = ")
        assert raw.startswith("'") and raw.endswith("'"), line
        body = raw[1:-1]
        out, i = [], 0
        while i < len(body):
            if body[i] == "'":
                assert body[i + 1] == "'", line
                out.append("'")
                i += 2
            elif body[i] == "\\":
                out.append(body[i + 1])
                i += 2
            else:
                out.append(body[i])
                i += 1
        values[name] = "".join(out)
    return values


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40))
def test_quote_conf_round_trips(value: str) -> None:
    assert parse_conf(f"x = {quote_conf(value)}")["x"] == value


def test_quote_conf_refuses_line_breaks() -> None:
    for bad in ("a\nrecovery_target_action = 'shutdown'", "a\rb", "a\x0cb", "a\x00b"):
        with pytest.raises(UsageError, match="line breaks"):
            quote_conf(bad)


def test_settings_name_target() -> None:
    command = restore_command(["/opt/dbg/bin/dbguardian"], Path("/etc/dbg/it's.yaml"), "app", Path("/k/age key"))
    text = render_settings(
        command=command, target=RecoveryTarget("name", "before 'mig'"), port=6543, socket_dir=Path("/tmp/s")
    )
    values = parse_conf(text)
    assert values == {
        "restore_command": command,
        "recovery_target_name": "before 'mig'",
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        "port": "6543",
        "unix_socket_directories": "/tmp/s",
        "listen_addresses": "127.0.0.1",
        "archive_mode": "off",
    }
    assert command == (
        "/opt/dbg/bin/dbguardian wal-fetch --policy '/etc/dbg/it'\"'\"'s.yaml' --target app --identity '/k/age key' %f %p"
    )


def test_settings_time_lsn_latest_and_keep_archiving() -> None:
    time_values = parse_conf(
        render_settings(
            command="c %f %p", target=make_target(to_time="2026-12-04T14:50:00+01:00"), port=1, socket_dir=Path("/s")
        )
    )
    assert time_values["recovery_target_time"] == "2026-12-04 13:50:00+00:00"
    lsn_values = parse_conf(
        render_settings(command="c", target=RecoveryTarget("lsn", "0/3000060"), port=1, socket_dir=Path("/s"))
    )
    assert lsn_values["recovery_target_lsn"] == "0/3000060"
    latest = parse_conf(
        render_settings(command="c", target=RecoveryTarget("latest"), port=1, socket_dir=Path("/s"), keep_archiving=True)
    )
    assert not [name for name in latest if name.startswith("recovery_target_") and name != "recovery_target_action"
                and name != "recovery_target_timeline"]  # fmt: skip
    assert "archive_mode" not in latest


def test_shell_word() -> None:
    assert shell_word("/usr/bin/x") == "/usr/bin/x"
    assert shell_word("a b") == "'a b'"
    assert shell_word("$(rm -rf /)") == "'$(rm -rf /)'"
    assert shell_word("") == "''"


# Tar safety.


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    item = tarfile.TarInfo(name)
    item.type, item.size, item.linkname, item.mode = kind, size, link, mode
    return item


@pytest.mark.parametrize(
    ("member", "why"),
    [
        (info("/etc/passwd"), "outside"),
        (info("../escape"), "outside"),
        (info("base/../../escape"), "outside"),
        (info("pg_tblspc/16384", tarfile.SYMTYPE, link="/srv/ts"), "symbolic link"),
        (info("x", tarfile.SYMTYPE, link="../../etc"), "symbolic link"),
        (info("x", tarfile.LNKTYPE, link="/etc/shadow"), "links outside"),
        (info("dev", tarfile.CHRTYPE), "not a file or directory"),
        (info("fifo", tarfile.FIFOTYPE), "not a file or directory"),
    ],
)
def test_unsafe_members_are_refused(member: tarfile.TarInfo, why: str) -> None:
    with pytest.raises(OperationError, match=why):
        check_member(member)


def test_extract_tar_writes_private_files_and_refuses_escapes(tmp_path: Path) -> None:
    pgdata = tmp_path / "data"
    pgdata.mkdir()
    stream = tar_of(
        (info("global", tarfile.DIRTYPE, mode=0o755), None),
        (info("PG_VERSION", size=3, mode=0o644), b"15\n"),
        (info("global/pg_control", size=2, mode=0o666), b"ab"),
        (info("backup_label", size=1), b"x"),
    )
    assert extract_tar(stream, pgdata) == 4
    assert (pgdata / "PG_VERSION").read_text() == "15\n"
    assert (pgdata / "global").stat().st_mode & 0o777 == 0o700
    assert (pgdata / "global" / "pg_control").stat().st_mode & 0o077 == 0
    evil = tar_of((info("ok", size=1), b"x"), (info("../evil", size=1), b"x"))
    with pytest.raises(OperationError, match="outside"):
        extract_tar(evil, tmp_path / "data")
    assert not (tmp_path / "evil").exists()
