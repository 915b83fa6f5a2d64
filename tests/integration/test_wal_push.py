"""`dbguardian wal-push` as a real PostgreSQL 15 `archive_command`: segments arrive in the spool intact."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from dbguardian.throwaway import ThrowawayCluster, short_tempdir
from tests.support.majors import lane_server_bin

REPO = Path(__file__).resolve().parents[2]


def archiver_python(cluster: ThrowawayCluster, lib: Path) -> str:
    """A shell prefix that runs this checkout's dbguardian as the cluster's OS user."""
    if cluster.os_user is None:
        return shlex.quote(sys.executable)
    reachable = subprocess.run(["runuser", "-u", cluster.os_user, "--", sys.executable, "-c", "import click"], check=False)
    if reachable.returncode == 0:
        return shlex.quote(sys.executable)
    # The test venv's interpreter may sit where the postgres user cannot enter (/root): use the system
    # Python of the same version with this checkout and a copy of click (wal-push's only dependency).
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    python = shutil.which(version, path="/usr/local/bin:/usr/bin")
    if python is None:
        pytest.skip(f"no {version} the {cluster.os_user} user can run")
    shutil.copytree(Path(click.__file__).parent, lib / "click")
    return f"PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={shlex.quote(f'{REPO}:{lib}')} {shlex.quote(python)}"


@pytest.fixture
def archiving() -> Iterator[tuple[ThrowawayCluster, Path]]:
    """A throw-away cluster archiving through `wal-push` into a spool it creates (0700) itself."""
    base = short_tempdir("dbgw-")
    cluster = ThrowawayCluster(base / "pg", bin_dir=lane_server_bin()).start()
    spool = cluster.base / "wal-spool" / "app"  # cluster.base belongs to the server's OS user
    try:
        lib = base / "pylib"
        command = f"{archiver_python(cluster, lib)} -m dbguardian wal-push --spool {shlex.quote(str(spool))} %p"
        cluster.psql(f"ALTER SYSTEM SET archive_mode = 'on'; ALTER SYSTEM SET archive_command = '{command}';")
        cluster.stop(strict=True)  # archive_mode needs a restart
        cluster.start()
        yield cluster, spool
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def archiver(cluster: ThrowawayCluster) -> tuple[int, int, str]:
    archived, failed, last = cluster.psql(
        "SELECT archived_count, failed_count, coalesce(last_archived_wal, '') FROM pg_stat_archiver"
    ).split("|")
    return int(archived), int(failed), last


def test_archive_command_puts_each_segment_into_the_spool(archiving: tuple[ThrowawayCluster, Path]) -> None:
    cluster, spool = archiving
    cluster.psql("CREATE TABLE orders (id serial PRIMARY KEY, note text)")
    finished = []
    for round_ in range(4):
        cluster.psql(f"INSERT INTO orders (note) SELECT md5(i::text || '{round_}') FROM generate_series(1, 20000) i")
        finished.append(cluster.psql("SELECT pg_walfile_name(pg_switch_wal())"))

    deadline = time.monotonic() + 60
    while archiver(cluster)[2] != finished[-1] and time.monotonic() < deadline:
        time.sleep(0.2)
    archived, failed, last = archiver(cluster)
    assert last == finished[-1], (archived, failed, last, (cluster.log_file.read_text()[-2000:]))
    assert failed == 0

    names = sorted(path.name for path in spool.iterdir())
    assert set(finished) <= set(names)
    assert len(names) == archived  # everything archived is in the spool, and nothing else (no temp files)
    for name in names:
        stored = spool / name
        assert stored.read_bytes() == (cluster.data_dir / "pg_wal" / name).read_bytes(), name
        assert stored.stat().st_size == 16 * 1024 * 1024
        assert stored.stat().st_mode & 0o777 == 0o600
    assert spool.stat().st_mode & 0o777 == 0o700
    assert spool.parent.stat().st_mode & 0o777 == 0o700
    if cluster.os_user is not None:
        owner = spool.stat().st_uid
        assert {path.stat().st_uid for path in spool.iterdir()} == {owner} != {os.geteuid()}

    # PostgreSQL pushing a segment again (it crashed before noting success) is fine; different bytes are not
    first = spool / finished[0]
    kept = first.read_bytes()
    again = subprocess.run(
        [sys.executable, "-m", "dbguardian", "wal-push", "--spool", str(spool), f"pg_wal/{finished[0]}"],
        cwd=cluster.data_dir, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (again.returncode, again.stderr) == (0, "")
    forged = cluster.base / finished[0]
    forged.write_bytes(kept[:-1] + bytes([kept[-1] ^ 1]))
    refused = subprocess.run(
        [sys.executable, "-m", "dbguardian", "wal-push", "--spool", str(spool), str(forged)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr == (
        f"error: {finished[0]} is already in the spool with different content; refusing to overwrite WAL ({first})\n"
    )
    assert first.read_bytes() == kept
    assert sorted(path.name for path in spool.iterdir()) == names
