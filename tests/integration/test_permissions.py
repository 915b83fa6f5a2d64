"""Backups and state are private whatever the umask: a real ``dbguardian backup`` run from a shell
with umask 022 leaves every file 0600 and every directory 0700 under the storage root and state_dir."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import PolicyFactory, Postgres, backup_dir, run_cli


@pytest.fixture
def shell_umask() -> Iterator[None]:
    """The umask of an interactive shell or cron job (no systemd UMask=0077); children inherit it."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes_under(root: Path) -> dict[str, str]:
    """``relative path -> octal mode`` of ``root`` itself and everything below it."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for directory, subdirs, files in os.walk(root):
        for name in [*subdirs, *files]:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def test_backup_under_umask_022_is_private(
    pg: Postgres, database: str, make_policy: PolicyFactory, tmp_path: Path, shell_umask: None
) -> None:
    policy = make_policy(database)
    result = run_cli(policy, "backup", "app")
    assert result.returncode == 0, result.stderr
    backup_id = result.stdout.strip().splitlines()[-1]
    state_dir = Path(yaml.safe_load(policy.read_text())["state_dir"])
    assert (backup_dir(policy) / "app" / backup_id / "manifest.json").is_file()
    assert (state_dir / "targets" / "app.json").is_file()  # the attempt record
    for root in (backup_dir(policy), state_dir):
        modes = modes_under(root)
        wrong = {path: mode for path, mode in modes.items() if mode != ("0o700" if (root / path).is_dir() else "0o600")}
        assert not wrong, f"{root}: {wrong}"


def test_local_storage_modes_whatever_the_umask(tmp_path: Path, shell_umask: None) -> None:
    import asyncio

    from dbguardian.storage.local import LocalStorage

    storage = LocalStorage("local", tmp_path / "root" / "nested")

    async def scenario() -> None:
        await storage.put_bytes("app/1/manifest.json", b"{}")
        await storage.put_bytes("app/1/once.json", b"{}", if_absent=True)
        writer = await storage.open_writer("app/2/dump")
        await writer.write(b"x" * 100)
        temp = next(p for p in (tmp_path / "root" / "nested" / "app" / "2").iterdir())
        assert oct(stat.S_IMODE(temp.stat().st_mode)) == "0o600"  # even before commit
        await writer.commit()

    asyncio.run(scenario())
    modes = modes_under(tmp_path / "root")
    assert modes == {
        ".": "0o700",
        "nested": "0o700",
        "nested/app": "0o700",
        "nested/app/1": "0o700",
        "nested/app/1/manifest.json": "0o600",
        "nested/app/1/once.json": "0o600",
        "nested/app/2": "0o700",
        "nested/app/2/dump": "0o600",
    }


def test_state_files_modes_whatever_the_umask(tmp_path: Path, shell_umask: None) -> None:
    from dbguardian.files import private_dirs
    from dbguardian.state import append_line, write_json

    state = tmp_path / "state"
    write_json(state / "health" / "app.json", {"db_failures": 0})
    append_line(state / "drills" / "history.jsonl", '{"target": "app"}')
    append_line(state / "drills" / "history.jsonl", '{"target": "app"}')
    private_dirs(state / "tmp")
    assert (state / "drills" / "history.jsonl").read_text().count("\n") == 2
    assert modes_under(state) == {
        ".": "0o700",
        "health": "0o700",
        "health/app.json": "0o600",
        "drills": "0o700",
        "drills/history.jsonl": "0o600",
        "tmp": "0o700",
    }
