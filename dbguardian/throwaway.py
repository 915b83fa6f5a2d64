"""Throw-away PostgreSQL clusters (initdb + pg_ctl): for restore drills in production (``drill.mode:
local_cluster``), the demo, the tests and local work.

Runs the server as the ``postgres`` OS user when dbguardian runs as root (PostgreSQL refuses root).
Local connections over the unix socket are trusted for the bootstrap superuser; TCP connections
need a password (scram-sha-256), like a real server.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dbguardian.errors import ToolError

SUPERUSER = "postgres"


def find_server_bin(preferred_major: int | None = None, extra_dirs: Sequence[Path] = ()) -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres``: of ``preferred_major`` when one is installed
    (``extra_dirs``, the policy's ``pg_bin_dirs``, first), else the oldest newer major (a newer server
    restores an older one's dump), never an older one; without a major, the newest there is."""
    found: list[tuple[int, Path]] = []
    for directory in extra_dirs:
        major = _server_major(directory)
        if major is not None:
            found.append((major, directory))
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        if Path(initdb).parts[-3].isdigit():
            found.append((int(Path(initdb).parts[-3]), Path(initdb).parent))
    on_path = shutil.which("initdb")
    if on_path:
        directory = Path(on_path).resolve().parent
        major = _server_major(directory)
        if major is not None:
            found.append((major, directory))
    if not found:
        raise ToolError("no PostgreSQL server binaries found (initdb); install postgresql-15 or similar")
    if preferred_major is not None:
        exact = [item for item in found if item[0] == preferred_major]
        newer = [item for item in found if item[0] > preferred_major]
        if not exact and not newer:
            seen = ", ".join(f"{directory} ({major})" for major, directory in found)
            raise ToolError(
                f"no PostgreSQL {preferred_major} server or newer (found: {seen}); an older server cannot load "
                f"its data: install the PostgreSQL {preferred_major} server or add its directory to pg_bin_dirs"
            )
        return min(exact or newer, key=lambda item: item[0])[1]  # stable: pg_bin_dirs first within a major
    return max(found, key=lambda item: item[0])[1]


def _server_major(directory: Path) -> int | None:
    """The major of the server in ``directory`` (``postgres --version``), None if there is none."""
    postgres = directory / "postgres"
    if not (directory / "initdb").is_file() or not postgres.is_file():
        return None
    try:
        out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(match.group(1)) if match else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ThrowawayCluster:
    """Start with :meth:`start`, stop with :meth:`stop`; everything lives under ``base``."""

    base: Path
    port: int = field(default_factory=free_port)
    bin_dir: Path = field(default_factory=find_server_bin)
    os_user: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    """Extra postgresql.conf lines written at initdb (``name -> value`` as it appears after ``=``)."""

    def __post_init__(self) -> None:
        if self.os_user is None and os.geteuid() == 0:
            self.os_user = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if self.os_user is None:
            return argv
        return ["runuser", "-u", self.os_user, "--", *argv]

    def _run(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self._as_owner(argv), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
        if result.returncode != 0:
            raise ToolError(f"{Path(argv[0]).name} failed: {(result.stderr or result.stdout).strip()[-500:]}")
        return result  # type: ignore[no-any-return]

    def start(self) -> ThrowawayCluster:
        if len(str(self.socket_dir)) > 90:
            raise ToolError(f"socket directory path too long for a unix socket: {self.socket_dir}")
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        if self.os_user is not None:
            owner = pwd.getpwnam(self.os_user)
            for path in (self.base, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E", "UTF8",
                    "--locale=C.UTF-8",
                    "-N",
                ]
            )  # fmt: skip
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.write(
                    "\n# dbguardian throw-away cluster\n"
                    f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.socket_dir}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 100\nshared_buffers = 128MB\n"
                )
                conf.writelines(f"{name} = {value}\n" for name, value in self.settings.items())
        else:
            conf_path = self.data_dir / "postgresql.conf"
            text = conf_path.read_text()
            for line in text.splitlines():
                if line.startswith("port = "):
                    self.port = int(line.split("=")[1])
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        return self

    def stop(self, *, strict: bool = False, mode: str = "immediate") -> None:
        """Stop the server (``immediate`` by default; ``fast`` for a clean shutdown checkpoint).
        ``strict``: raise if pg_ctl fails instead of ignoring it."""
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])
            except ToolError:
                if strict:
                    raise

    @property
    def psql_path(self) -> Path:
        """``psql`` beside the server, else the newest one installed: some server builds (the embedded
        ones from npm) ship initdb, pg_ctl and postgres only, and any psql talks to any server."""
        beside = self.bin_dir / "psql"
        if beside.exists():
            return beside
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"), key=lambda p: int(Path(p).parts[-3]))
        on_path = shutil.which("psql")
        if found or on_path:
            return Path(found[-1] if found else str(on_path))
        raise ToolError(f"no psql beside {self.bin_dir} nor installed; install the PostgreSQL client tools")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the unix socket; returns unaligned output."""
        result = self._run(
            [
                str(self.psql_path), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", database,
            ],
            input=sql,
        )  # fmt: skip
        return result.stdout.strip()

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> None:
        attributes = "SUPERUSER" if superuser else "CREATEDB"
        self.psql(f"CREATE ROLE \"{name}\" LOGIN {attributes} PASSWORD '{password}'")

    def dsn(self, database: str, user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"


def short_tempdir(prefix: str = "dbg-") -> Path:
    """A short directory path under /tmp (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)  # the postgres OS user must be able to traverse it
    return path


def wait_ready(cluster: ThrowawayCluster, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.psql("SELECT 1")
            return
        except ToolError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
