"""`dbguardian wal-push`: durable, never-overwriting copies of WAL files into the spool (tmp dirs only)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dbguardian.cli import DEFAULT_POLICY_PATH, cli
from dbguardian.policy import DEFAULT_POLICY_PATH as POLICY_DEFAULT
from dbguardian.spool import SpoolError, WalConflict, is_wal_file_name, push

SEGMENT = "000000010000000A000000FE"


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def wal_push(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["wal-push", *map(str, args)])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def segment(directory: Path, content: bytes, name: str = SEGMENT) -> Path:
    path = directory / "pg_wal" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def leftovers(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    "name",
    [SEGMENT, "00000002.history", f"{SEGMENT}.00000028.backup", f"{SEGMENT}.partial"],
)
def test_wal_file_names_are_accepted(name: str) -> None:
    assert is_wal_file_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "postgresql.conf", SEGMENT.lower(), SEGMENT[:-1], f"{SEGMENT}.backup", "0000002.history", f"{SEGMENT}.tmp"],
)
def test_other_names_are_refused(name: str) -> None:
    assert not is_wal_file_name(name)


def test_new_segment_is_copied_private_and_durable(tmp_path: Path, umask_022: None) -> None:
    content = os.urandom(3 * 1024 * 1024 + 17)  # several chunks and a partial one
    source = segment(tmp_path, content)
    spool = tmp_path / "spool" / "app"
    code, output = wal_push("--spool", spool, source)
    assert (code, output) == (0, "")
    assert (spool / SEGMENT).read_bytes() == content
    assert (spool / SEGMENT).stat().st_mode & 0o777 == 0o600
    assert spool.stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert leftovers(spool) == []
    assert source.read_bytes() == content  # the source is PostgreSQL's: never touched


def test_relative_path_is_taken_from_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    segment(tmp_path, b"wal")  # archive_command gets %p relative to the data directory, its cwd
    monkeypatch.chdir(tmp_path)
    assert wal_push("--spool", tmp_path / "spool", f"pg_wal/{SEGMENT}") == (0, "")
    assert (tmp_path / "spool" / SEGMENT).read_bytes() == b"wal"


def test_same_content_again_succeeds(tmp_path: Path) -> None:
    source = segment(tmp_path, b"x" * 5000)
    spool = tmp_path / "spool"
    assert wal_push("--spool", spool, source) == (0, "")
    assert wal_push("--spool", spool, source) == (0, "")
    assert push(source, spool) is False
    assert (spool / SEGMENT).read_bytes() == b"x" * 5000
    assert leftovers(spool) == []


@pytest.mark.parametrize("other", [b"y" * 5000, b"x" * 4999, b"x" * 5001, b""])
def test_different_content_is_refused_and_the_spool_copy_kept(tmp_path: Path, other: bytes) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / SEGMENT).write_bytes(b"x" * 5000)
    source = segment(tmp_path, other)
    code, output = wal_push("--spool", spool, source)
    assert code == 1
    assert output == (
        f"error: {SEGMENT} is already in the spool with different content; refusing to overwrite WAL ({spool / SEGMENT})\n"
    )
    assert (spool / SEGMENT).read_bytes() == b"x" * 5000
    assert leftovers(spool) == []


def test_bad_name_is_refused(tmp_path: Path) -> None:
    source = segment(tmp_path, b"conf", name="postgresql.conf")
    code, output = wal_push("--spool", tmp_path / "spool", source)
    assert code == 1
    assert output == "error: 'postgresql.conf' is not the name of a WAL file (segment, .history, .backup or .partial)\n"
    assert not (tmp_path / "spool").exists()


def test_missing_source_fails_without_leftovers(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    code, output = wal_push("--spool", spool, tmp_path / SEGMENT)
    assert code == 1
    assert output.startswith("error: cannot copy ") and output.endswith(": No such file or directory\n")
    assert output.count("\n") == 1
    assert list(spool.iterdir()) == []


def test_unwritable_spool_fails_without_leftovers(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o500)
    code, output = wal_push("--spool", spool, segment(tmp_path, b"wal"))
    assert code == 1 and "Permission denied" in output
    assert list(spool.iterdir()) == []


def test_without_spool_the_policy_names_it_and_a_missing_policy_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--policy", str(tmp_path / "none.yaml"), "wal-push", SEGMENT])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: policy: cannot read") and "\n" not in result.output.strip()


def test_concurrent_pushes_of_one_name_let_exactly_one_win(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    sources = []
    for i in range(8):
        (tmp_path / str(i)).mkdir()
        sources.append(segment(tmp_path / str(i), bytes([i]) * 200_000))
    start = threading.Barrier(len(sources))
    outcomes: list[bool | str] = []

    def run(source: Path) -> None:
        start.wait()
        try:
            outcomes.append(push(source, spool))
        except WalConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=run, args=(source,)) for source in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(True) == 1
    assert outcomes.count("conflict") == len(sources) - 1
    winner = (spool / SEGMENT).read_bytes()
    assert winner in {source.read_bytes() for source in sources}
    assert leftovers(spool) == []


def test_concurrent_pushes_of_the_same_content_all_succeed(tmp_path: Path) -> None:
    source = segment(tmp_path, os.urandom(300_000))
    spool = tmp_path / "spool"
    start = threading.Barrier(6)
    outcomes: list[bool] = []

    def run() -> None:
        start.wait()
        outcomes.append(push(source, spool))

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 6 and outcomes.count(True) <= 1
    assert (spool / SEGMENT).read_bytes() == source.read_bytes()
    assert leftovers(spool) == []


def test_spool_errors_are_operation_failures() -> None:
    assert SpoolError("x").exit_code == 1


def test_cli_default_policy_path_matches_the_policy_package() -> None:
    assert DEFAULT_POLICY_PATH == POLICY_DEFAULT


def test_wal_push_does_not_import_the_daemon_world(tmp_path: Path) -> None:
    source = segment(tmp_path, b"wal")
    probe = (
        "import sys\n"
        "sys.argv = ['dbguardian', 'wal-push', '--spool', sys.argv[1], sys.argv[2]]\n"
        "import dbguardian.entry\n"
        "def keep_running(status):\n"  # the command's fast exit would end the probe before it reports
        "    raise SystemExit(status)\n"
        "dbguardian.entry.exit_now = keep_running\n"
        "try:\n"
        "    import dbguardian.__main__\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "spool"), str(source)], capture_output=True, text=True, check=True
    )
    modules = set(result.stdout.split())
    heavy = {
        "asyncio",
        "asyncpg",
        "aioboto3",
        "aiohttp",
        "apscheduler",
        "pydantic",
        "structlog",
        "yaml",
        "dbguardian.policy",
    }
    assert modules & heavy == set()
    assert {m for m in modules if m.startswith("dbguardian")} == {
        "dbguardian",
        "dbguardian.entry",
        "dbguardian.cli",
        "dbguardian.cli.app",
        "dbguardian.cli.wal_push",
        "dbguardian.errors",
        "dbguardian.files",
        "dbguardian.spool",
    }
    assert (tmp_path / "spool" / SEGMENT).read_bytes() == b"wal"


def test_failure_after_the_copy_leaves_no_temp_file_and_no_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(fd: int) -> None:  # an I/O error the disk would report (EIO cannot be provoked in tmp)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("dbguardian.spool.os.fsync", broken_fsync)
    spool = tmp_path / "spool"
    code, output = wal_push("--spool", spool, segment(tmp_path, b"wal"))
    assert code == 1
    assert output.endswith(": Input/output error\n")
    assert list(spool.iterdir()) == []


def test_version_option_still_prints_the_package_version() -> None:
    import dbguardian

    result = CliRunner().invoke(cli, ["--version"])
    assert (result.exit_code, result.output) == (0, f"dbguardian {dbguardian.__version__}\n")
    assert dbguardian.__version__ not in ("", "0.0.0")
