"""The program's entry point: which `wal-fetch` calls the prefetch queue answers without click."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dbguardian.cli import DEFAULT_POLICY_PATH
from dbguardian.entry import DEFAULT_POLICY, command_word, parse


def test_the_default_policy_is_the_clis() -> None:
    assert Path(DEFAULT_POLICY) == DEFAULT_POLICY_PATH


def test_a_restore_command_line_is_parsed_with_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DBGUARDIAN_IDENTITY_FILE", raising=False)
    parsed = parse(["--policy", "p.yaml", "wal-fetch", "--target", "app", "--identity=id.txt", "000000010000000000000003",
                    "pg_wal/RECOVERYXLOG"])  # fmt: skip
    assert parsed is not None
    name, dest, key, fetcher = parsed
    assert name == "000000010000000000000003" and dest == str(tmp_path / "pg_wal" / "RECOVERYXLOG")
    assert key == "\x1f".join([str(tmp_path / "p.yaml"), "app", str(tmp_path / "id.txt"), "8"])
    assert fetcher[:3] == [sys.executable, "-m", "dbguardian"]
    assert fetcher[3:5] == ["--policy", str(tmp_path / "p.yaml")]
    assert fetcher[5:9] == ["wal-fetch", "--queue-server", "--queue-key", key]
    assert fetcher[-2:] == [name, dest] and "--identity" in fetcher and "--target" in fetcher


def test_the_commands_policy_wins_and_the_environment_fills_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBGUARDIAN_POLICY", "/env/policy.yaml")
    monkeypatch.setenv("DBGUARDIAN_IDENTITY_FILE", "/env/id.txt")
    by_env = parse(["wal-fetch", "000000010000000000000003", "/x/RECOVERYXLOG"])
    assert by_env is not None and by_env[2] == "\x1f".join(["/env/policy.yaml", "", "/env/id.txt", "8"])
    command_wins = parse(["--policy", "/a.yaml", "wal-fetch", "--policy", "/b.yaml", "--prefetch", "3", "X", "/d"])
    assert command_wins is not None and command_wins[2].startswith("/b.yaml\x1f") and command_wins[2].endswith("\x1f3")


@pytest.mark.parametrize(
    "argv",
    [
        ["wal-fetch", "--help"],
        ["wal-fetch", "--prefetch", "0", "X", "/d"],  # no queue: the click command downloads in-process
        ["wal-fetch", "--prefetch", "65", "X", "/d"],
        ["wal-fetch", "--prefetch", "x", "X", "/d"],
        ["wal-fetch", "--bogus", "X", "/d"],
        ["wal-fetch", "X"],
        ["wal-fetch", "X", "/d", "extra"],
        ["wal-fetch", "../X", "/d"],
        ["backup", "wal-fetch", "X", "/d"],
        ["--log-level"],
        ["wal-fetch", "--target"],
        ["wal-fetch", "--target", "a\nb", "X", "/d"],
    ],
)
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    assert parse(argv) is None


def test_global_logging_options_are_accepted() -> None:
    parsed = parse(["--log-level", "warning", "--log-format=json", "wal-fetch", "X", os.sep + "d"])
    assert parsed is not None and parsed[0] == "X"


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--policy", "/etc/p.yaml", "run"], "run"),
        (["--policy=/etc/p.yaml", "--log-level", "debug", "run"], "run"),
        (["--log-format", "json", "backup", "run"], "backup"),  # a target named "run"
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_word_follows_the_global_options(argv: list[str], word: str | None) -> None:
    assert command_word(argv) == word


@pytest.mark.parametrize(("status", "code", "stderr"), [(None, 0, ""), (3, 3, ""), ("error: bad", 1, "error: bad\n")])
def test_a_fast_exit_keeps_the_status_and_everything_written(status: object, code: int, stderr: str) -> None:
    # A megabyte of output still buffered in sys.stdout when the command ends must all arrive.
    script = f"import sys; from dbguardian.entry import exit_now; sys.stdout.write('x' * 1_000_000); exit_now({status!r})"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (run.returncode, len(run.stdout), run.stderr) == (code, 1_000_000, stderr)


def test_a_command_exits_with_its_status_and_message(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    run = subprocess.run(
        [sys.executable, "-m", "dbguardian", "--policy", str(missing), "list"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and str(missing) in run.stderr and run.stdout == ""
    version = subprocess.run([sys.executable, "-m", "dbguardian", "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("dbguardian ")
