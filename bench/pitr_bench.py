#!/usr/bin/env python3
"""Benchmark WAL archiving under load and point-in-time restore: dbguardian vs pgBackRest.

For each variant, one after the other, a throwaway PostgreSQL 15 cluster (fsync on, full_page_writes on,
synchronous_commit off) is loaded with pgbench data (``--scale``), gets a base backup, then takes
``pgbench -c 8 -j 2 -T <--seconds>`` while its WAL is archived:

  dbguardian   archive_library = 'basic_archive' into the spool; ``dbguardian run`` (the daemon, job
               wal_ship) ships the spool to a local storage (zstd level 3). Base backup: ``backup --physical``.
  pgbackrest   archive_command = 'pgbackrest ... archive-push %p' with archive-async=y, local repo,
               compress-type=zst (level 3), process-max=2. Base backup: ``pgbackrest backup --type=full``.

Sampled every second (WAL segment numbers):
  gen/min      WAL segments written per minute during the load (pg_current_wal_lsn)
  stored/min   segments that reached the storage / repo per minute during the load (newest file there)
  arch lag     max over samples of current segment - pg_stat_archiver.last_archived_wal - 1
  store lag    max of current segment - newest segment on the storage / in the repo - 1 (for pgBackRest
               async both are the same: archive-push returns once the async process stored the file)
  ready hw     high-water mark of pg_wal/archive_status/*.ready (the server's queue; pgBackRest's spool
               queue: the async process reads WAL from pg_wal)
  spool hw     dbguardian: high-water mark of WAL files in the spool
  catch-up     seconds from the end of the load until store lag is 0 (the current segment not counted)
  cpu          CPU seconds of the archiver side from the base backup's end to catch-up, from cgroup v1
               cpuacct (cpuacct.usage): the server's archiver process is moved into a cgroup of its own,
               so it counts archive_command and every process it starts (pgBackRest's detached async
               process included); for dbguardian that is basic_archive's copy, plus the daemon process
               (its own cgroup). Without a writable cpuacct hierarchy: /proc utime+stime of those two
               processes (children not counted), marked "(proc)".

Then, both servers stopped, the PITR restore to a time 2/3 into each variant's load, interleaved
``--restore-runs`` times, wall clock until the restored server is promoted:
  dbguardian   restore bench --pitr --pgdata DIR --to-time T --start --port N --json (restore_command runs
               ``dbguardian wal-fetch`` as postgres)
  pgbackrest   pgbackrest restore --type=time --target=T --target-action=promote --archive-mode=off, then
               pg_ctl start and poll pg_is_in_recovery() until false
and the ratio dbguardian / pgBackRest (goal ≤ 1.2). Sanity check: max(pgbench_history.mtime) ≤ T.

Run as root (servers run as ``postgres``) from the checkout:
  .venv/bin/python bench/pitr_bench.py                         # scale 20, 60 s load (a few minutes)
  .venv/bin/python bench/pitr_bench.py --scale 100 --seconds 180   # the issue's 1.5 GB case (target 2 min in)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dbguardian.throwaway import ThrowawayCluster, free_port  # noqa: E402

PGBIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
CGROUP = Path("/sys/fs/cgroup/cpuacct")
RATIO_TARGET = 1.2
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[pitr-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def as_pg(argv: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *argv] if os.geteuid() == 0 else argv


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} failed ({result.returncode}): {(result.stderr or result.stdout)[-2000:]}")
    return result.stdout


def segno(name: str) -> int:
    """Segment number of a WAL file name (16 MB segments: 256 per xlogid)."""
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def is_segment(name: str) -> bool:
    return len(name) >= 24 and all(c in "0123456789ABCDEF" for c in name[:24]) and not name.endswith((".tmp", ".partial"))


def newest_segment(root: Path) -> int | None:
    """Newest WAL segment stored under ``root`` (any depth; file name starts with the segment name)."""
    best: int | None = None
    for _dirpath, _dirs, files in os.walk(root):
        for name in files:
            if is_segment(name) and name[:8] == "00000001":
                number = segno(name)
                best = number if best is None or number > best else best
    return best


class CpuMeter:
    """CPU seconds of a set of processes and everything they start: a cgroup v1 cpuacct group, or /proc."""

    def __init__(self, name: str) -> None:
        self.group = CGROUP / name
        self.pids: list[int] = []
        self.use_cgroup = False
        try:
            self.group.mkdir(exist_ok=True)
            self.use_cgroup = True
        except OSError:
            pass

    def add(self, pid: int) -> None:
        self.pids.append(pid)
        if self.use_cgroup:
            (self.group / "cgroup.procs").write_text(str(pid))

    def seconds(self) -> float:
        if self.use_cgroup:
            return int((self.group / "cpuacct.usage").read_text()) / 1e9
        total = 0.0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    def close(self) -> None:
        if not self.use_cgroup or not self.group.exists():
            return
        for pid in (self.group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # the process may have exited
                (CGROUP / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            self.group.rmdir()


@dataclass
class LoadResult:
    name: str
    seconds: float = 0.0
    tps: str = ""
    gen_segments: int = 0
    stored_segments: int = 0
    max_arch_lag: int = 0
    max_store_lag: int = 0
    ready_hw: int = 0
    spool_hw: int | None = None
    catch_up: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_method: str = "cgroup"
    target_time: str = ""
    restores: list[float] = field(default_factory=list)
    restore_checks: list[str] = field(default_factory=list)


class Variant:
    """One cluster archiving through one tool."""

    name = ""

    def __init__(self, workdir: Path, scale: int) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True)
        self.workdir.chmod(0o755)
        self.scale = scale
        self.cluster = ThrowawayCluster(self.workdir / "pg", settings={
            "archive_mode": "on", "wal_level": "replica", "max_wal_senders": "10", "fsync": "on",
            "full_page_writes": "on", "max_wal_size": "'2GB'", "shared_buffers": "256MB", **self.archive_settings(),
        })  # fmt: skip
        self.result = LoadResult(self.name)
        self.cpu_meters: list[CpuMeter] = []

    def archive_settings(self) -> dict[str, str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Before the server starts."""

    def backup(self) -> None:
        raise NotImplementedError

    def storage_root(self) -> Path:
        raise NotImplementedError

    def spool_files(self) -> int | None:
        return None

    def start_meters(self) -> None:
        archiver = int(self.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'"))
        meter = CpuMeter(f"dbg-pitrbench-{self.name}-archiver")
        meter.add(archiver)
        self.cpu_meters.append(meter)

    def restore(self, pgdata: Path) -> tuple[float, str]:
        raise NotImplementedError

    def stop_archiving(self) -> None:
        """After the load (daemon stopped etc.)."""

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self.cluster.psql(sql, database)

    def pg_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=str(self.cluster.socket_dir), PGPORT=str(self.cluster.port), PGUSER="postgres", PGDATABASE="bench")
        return env

    def setup(self) -> None:
        self.prepare()
        self.cluster.start()
        self.psql("CREATE DATABASE bench")
        log(f"{self.name}: pgbench -i -s {self.scale}")
        run([str(PGBIN / "pgbench"), "-i", "-q", "-s", str(self.scale)], env=self.pg_env())
        self.psql("CHECKPOINT")
        log(f"{self.name}: base backup")
        started = time.monotonic()
        self.backup()
        log(f"{self.name}: base backup took {time.monotonic() - started:.1f}s")

    def load(self, seconds: int, catch_up_timeout: float) -> None:
        """pgbench under a 1 s sampler; the target time is taken 2/3 into the load."""
        result = self.result
        self.start_meters()
        cpu0 = [meter.seconds() for meter in self.cpu_meters]
        storage = self.storage_root()
        ready_dir = self.cluster.data_dir / "pg_wal" / "archive_status"
        stop = threading.Event()
        samples: list[tuple[float, int, int | None, int | None, int, int | None]] = []

        def current_and_archived() -> tuple[int, int | None]:
            row = self.psql("SELECT pg_walfile_name(pg_current_wal_lsn()) || ' ' || coalesce(last_archived_wal, '-') "
                            "FROM pg_stat_archiver")  # fmt: skip
            current, archived = row.split()
            return segno(current), (segno(archived) if archived != "-" else None)

        def sample() -> None:
            while not stop.is_set():
                current, archived = current_and_archived()
                stored = newest_segment(storage)
                ready = sum(1 for path in ready_dir.iterdir() if path.name.endswith(".ready"))
                samples.append((time.monotonic(), current, archived, stored, ready, self.spool_files()))
                stop.wait(1.0)

        start_current, _ = current_and_archived()
        start_stored = newest_segment(storage) or start_current
        sampler = threading.Thread(target=sample, daemon=True)
        log(f"{self.name}: pgbench -c 8 -j 2 -T {seconds}")
        started = time.monotonic()
        sampler.start()
        pgbench = subprocess.Popen(
            [str(PGBIN / "pgbench"), "-n", "-c", "8", "-j", "2", "-T", str(seconds)],
            env=self.pg_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        time.sleep(seconds * 2 / 3)
        result.target_time = self.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                       "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")  # fmt: skip
        out, _ = pgbench.communicate(timeout=seconds * 2 + 60)
        if pgbench.returncode != 0:
            raise SystemExit(f"pgbench failed: {out[-2000:]}")
        ended = time.monotonic()
        result.seconds = ended - started
        result.tps = next(
            (f"{float(line.split('=')[1].split('(')[0]):.0f}" for line in out.splitlines() if line.startswith("tps")), "?"
        )
        end_current, _ = current_and_archived()
        result.gen_segments = end_current - start_current
        result.stored_segments = (newest_segment(storage) or start_stored) - start_stored
        log(f"{self.name}: load done ({result.tps} tps, {result.gen_segments} segments); waiting for catch-up")
        deadline = ended + catch_up_timeout
        while time.monotonic() < deadline:
            current, _ = current_and_archived()
            stored = newest_segment(storage)
            if stored is not None and current - stored - 1 <= 0:
                result.catch_up = time.monotonic() - ended
                break
            time.sleep(0.2)
        stop.set()
        sampler.join()
        result.cpu = {
            meter.group.name.rsplit("-", 1)[1]: meter.seconds() - c0 for meter, c0 in zip(self.cpu_meters, cpu0, strict=True)
        }
        result.cpu_method = "cgroup" if all(m.use_cgroup for m in self.cpu_meters) else "proc"
        for _t, current, archived, stored, ready, spool in samples:
            if archived is not None:
                result.max_arch_lag = max(result.max_arch_lag, current - archived - 1)
            result.max_store_lag = max(result.max_store_lag, current - (stored if stored is not None else start_stored) - 1)
            result.ready_hw = max(result.ready_hw, ready)
            if spool is not None:
                result.spool_hw = max(result.spool_hw or 0, spool)
        # Untimed: close the segment being written and wait until it is stored, so the WAL after the target
        # time is archived for both tools (a restore to a time in an unarchived segment is refused).
        switched = segno(self.psql("SELECT pg_walfile_name(pg_switch_wal())"))
        while (stored := newest_segment(storage)) is None or stored < switched:
            if time.monotonic() > deadline + 300:
                raise SystemExit(f"{self.name}: segment {switched:X} (pg_switch_wal) not stored after 300 s")
            time.sleep(0.2)
        log(f"{self.name}: after pg_switch_wal: segment {switched:X} stored")
        self.stop_archiving()
        for meter in self.cpu_meters:
            meter.close()
        self.cluster.stop(mode="fast")

    def check_restored(self, socket_dir: str, port: int) -> str:
        """max(pgbench_history.mtime) must not be after the target time."""
        out = run(as_pg([str(PGBIN / "psql"), "-XAt", "-h", socket_dir, "-p", str(port), "-U", "postgres", "-d", "bench",
                         "-c", "SELECT pg_is_in_recovery(), count(*), max(mtime) <= "
                         f"('{self.result.target_time}'::timestamptz AT TIME ZONE current_setting('TimeZone')) "
                         "FROM pgbench_history"]))  # fmt: skip
        recovery, rows, before = out.strip().split("|")
        if recovery != "f" or before != "t":
            raise SystemExit(f"{self.name}: restored server wrong: in recovery {recovery}, max(mtime) <= target: {before}")
        return rows

    def stop_restored(self, pgdata: Path) -> None:
        subprocess.run(as_pg([str(PGBIN / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, check=False)  # fmt: skip


class Dbguardian(Variant):
    name = "dbguardian"

    def archive_settings(self) -> dict[str, str]:
        return {"archive_library": "'basic_archive'", "basic_archive.archive_directory": f"'{self.spool}'"}

    @property
    def spool(self) -> Path:
        return self.workdir / "pg" / "spool"

    def storage_root(self) -> Path:
        return self.workdir / "storage"

    def spool_files(self) -> int | None:
        return sum(1 for path in self.spool.iterdir() if len(path.name) == 24)

    def prepare(self) -> None:
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.spool.parent, OS_USER, OS_USER)
            shutil.chown(self.spool, OS_USER, OS_USER)
        self.policy = self.workdir / "policy.yaml"
        self.env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.daemon: subprocess.Popen[str] | None = None

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
        argv = [sys.executable, "-m", "dbguardian", "--log-level", "warning", "--policy", str(self.policy), *args]
        return run(argv, env=env or self.env, timeout=timeout)

    def backup(self) -> None:
        password = secrets.token_urlsafe(12)
        self.psql(f"CREATE ROLE bench LOGIN REPLICATION SUPERUSER PASSWORD '{password}'")
        password_file = self.workdir / "password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        self.policy.write_text(
            f"""version: 1
state_dir: {self.workdir / "state"}
metrics: {{listen: "127.0.0.1:{free_port()}"}}
storage:
  local: {{type: local, path: {self.storage_root()}}}
targets:
  bench:
    dsn: postgresql://bench@127.0.0.1:{self.cluster.port}/bench
    password_file: {password_file}
    storage: [local]
    compression: {{algorithm: zstd, level: 3, threads: 2}}
    wal: {{spool: {self.spool}, compression: {{algorithm: zstd, level: 3}}}}
"""
        )
        self.daemon_log = (self.workdir / "daemon.log").open("w")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "dbguardian", "--policy", str(self.policy), "run"],
            env=self.env, stdout=self.daemon_log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.cli("backup", "bench", "--physical")

    def start_meters(self) -> None:
        super().start_meters()
        assert self.daemon is not None
        meter = CpuMeter("dbg-pitrbench-dbguardian-daemon")
        meter.add(self.daemon.pid)
        self.cpu_meters.append(meter)

    def stop_daemon(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(timeout=60)
            self.daemon = None

    def stop_archiving(self) -> None:
        self.stop_daemon()
        if os.geteuid() == 0:  # restore_command runs wal-fetch as postgres: policy + storage readable by it
            for path in ("storage", "state", "policy.yaml", "password"):
                subprocess.run(["chown", "-R", f"{OS_USER}:", str(self.workdir / path)], check=True)
        probe = subprocess.run(as_pg([sys.executable, "-V"]), capture_output=True, check=False)
        if probe.returncode != 0:  # the venv under /root is not runnable by postgres: the system python on this checkout
            paths = ":".join([str(REPO), sysconfig.get_paths()["purelib"]])
            wrapper = self.workdir / "dbguardian-as-postgres"
            python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
            wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={paths} exec {python} -S -m dbguardian "$@"\n')
            wrapper.chmod(0o755)
            self.env["DBGUARDIAN_RESTORE_EXECUTABLE"] = str(wrapper)

    def restore(self, pgdata: Path) -> tuple[float, str]:
        port = free_port()
        started = time.monotonic()
        out = self.cli("restore", "bench", "--pitr", "--pgdata", str(pgdata), "--to-time", self.result.target_time,
                       "--start", "--port", str(port), "--json")  # fmt: skip
        seconds = time.monotonic() - started
        report = json.loads(out)
        rows = self.check_restored(str(report["socket_dir"]), int(report["port"]))
        self.stop_restored(pgdata)
        return seconds, rows


class Pgbackrest(Variant):
    name = "pgbackrest"

    @property
    def conf(self) -> Path:
        return self.workdir / "pgbackrest.conf"

    def archive_settings(self) -> dict[str, str]:
        return {"archive_command": f"'pgbackrest --config={self.conf} --stanza=bench archive-push %p'"}

    def storage_root(self) -> Path:
        return self.workdir / "pgbr" / "repo" / "archive"

    def prepare(self) -> None:
        for sub in ("repo", "log", "lock", "spool"):
            (self.workdir / "pgbr" / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"""[global]
repo1-path={self.workdir / "pgbr" / "repo"}
log-path={self.workdir / "pgbr" / "log"}
lock-path={self.workdir / "pgbr" / "lock"}
spool-path={self.workdir / "pgbr" / "spool"}
log-level-console=warn
log-level-file=off
process-max=2
compress-type=zst
compress-level=3
archive-async=y
start-fast=y

[bench]
pg1-path={self.cluster.data_dir}
pg1-port={self.cluster.port}
pg1-socket-path={self.cluster.socket_dir}
pg1-user=postgres
"""
        )
        self.conf.chmod(0o644)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", f"{OS_USER}:", str(self.workdir / "pgbr")], check=True)

    def pgbr(self, *args: str) -> str:
        return run(as_pg(["pgbackrest", f"--config={self.conf}", "--stanza=bench", *args]))

    def backup(self) -> None:
        self.pgbr("stanza-create")
        self.pgbr("--type=full", "backup")

    def restore(self, pgdata: Path) -> tuple[float, str]:
        port = free_port()
        socket_dir = pgdata.parent / f"sock-{port}"
        for path in (pgdata, socket_dir):
            path.mkdir(mode=0o700)
            if os.geteuid() == 0:
                shutil.chown(path, OS_USER, OS_USER)
        started = time.monotonic()
        target = self.result.target_time.replace("T", " ").replace("Z", "+00")
        self.pgbr(f"--pg1-path={pgdata}", "--type=time", f"--target={target}", "--target-action=promote",
                  "--archive-mode=off", "restore")  # fmt: skip
        options = f"-p {port} -c unix_socket_directories={socket_dir} -c listen_addresses=''"
        run(as_pg([str(PGBIN / "pg_ctl"), "-D", str(pgdata), "-l", str(socket_dir / "server.log"),
                   "-o", options, "-w", "-t", "1800", "start"]))  # fmt: skip
        probe = as_pg([str(PGBIN / "psql"), "-XAt", "-h", str(socket_dir), "-p", str(port), "-U", "postgres",
                       "-c", "SELECT pg_is_in_recovery()"])  # fmt: skip
        while subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip() != "f":
            if time.monotonic() - started > 1800:
                raise SystemExit("pgbackrest: restored server not promoted after 1800 s")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        rows = self.check_restored(str(socket_dir), port)
        self.stop_restored(pgdata)
        return seconds, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=20, help="pgbench scale (100 ≈ 1.5 GB)")
    parser.add_argument("--seconds", type=int, default=60, help="pgbench -T (the issue: 120 s or more)")
    parser.add_argument("--restore-runs", type=int, default=3)
    parser.add_argument("--catch-up-timeout", type=float, default=600)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dbg-pitrbench")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    args.workdir.chmod(0o755)
    variants: list[Variant] = []
    try:
        classes: list[type[Variant]] = [Dbguardian, Pgbackrest]
        for cls in classes:
            variant = cls(args.workdir, args.scale)
            variants.append(variant)
            variant.setup()
            variant.load(args.seconds, args.catch_up_timeout)
        report([variant.result for variant in variants], args)
        for run_number in range(args.restore_runs):
            for variant in variants:
                pgdata = variant.workdir / f"restored-{run_number}"
                log(f"{variant.name}: PITR restore to {variant.result.target_time} (run {run_number + 1})")
                seconds, rows = variant.restore(pgdata)
                variant.result.restores.append(seconds)
                variant.result.restore_checks.append(rows)
                log(f"{variant.name}: restored + promoted in {seconds:.2f}s (pgbench_history rows {rows})")
                shutil.rmtree(pgdata, ignore_errors=True)
        report([variant.result for variant in variants], args)
    except BaseException:
        args.keep = True  # the servers' and restores' logs are the evidence
        log(f"failed: keeping {args.workdir}")
        raise
    finally:
        for variant in variants:
            if isinstance(variant, Dbguardian):
                variant.stop_daemon()
            variant.cluster.stop()
            for meter in variant.cpu_meters:
                meter.close()
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)


def report(results: list[LoadResult], args: argparse.Namespace) -> None:
    cpus = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"# pitr_bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: pgbench scale {args.scale}, "
          f"-c 8 -j 2 -T {args.seconds}, {cpus} CPUs, {mem_gib:.0f} GiB RAM, {platform.release()}, PostgreSQL 15, "
          f"{run(['pgbackrest', 'version']).strip()}")  # fmt: skip
    print("## WAL under load (segments of 16 MB; lag excludes the segment being written)")
    print(f"{'variant':<11} {'tps':>7} {'gen/min':>8} {'stored/min':>10} {'arch lag':>8} {'store lag':>9} {'ready hw':>8} "
          f"{'spool hw':>8} {'catch-up s':>10}  cpu s")  # fmt: skip
    for r in results:
        minutes = r.seconds / 60
        catch_up = f"{r.catch_up:.1f}" if r.catch_up is not None else "timeout"
        cpu = " + ".join(f"{name} {value:.2f}" for name, value in r.cpu.items())
        total = sum(r.cpu.values())
        print(f"{r.name:<11} {r.tps:>7} {r.gen_segments / minutes:8.1f} {r.stored_segments / minutes:10.1f} "
              f"{r.max_arch_lag:8d} {r.max_store_lag:9d} {r.ready_hw:8d} {r.spool_hw if r.spool_hw is not None else '-':>8} "
              f"{catch_up:>10}  {total:.2f} ({cpu}; {r.cpu_method})")  # fmt: skip
    print(f"## PITR restore to 2/3 into the load, {args.restore_runs} runs interleaved, until promoted")
    medians = {}
    for r in results:
        if r.restores:
            medians[r.name] = statistics.median(r.restores)
            runs = ", ".join(f"{s:.2f}" for s in r.restores)
            print(f"{r.name:<11} median {medians[r.name]:7.2f} s  (runs {runs}; target {r.target_time}; "
                  f"pgbench_history rows {r.restore_checks[0]})")  # fmt: skip
    if len(medians) == 2:
        ratio = medians["dbguardian"] / medians["pgbackrest"]
        print(f"ratio dbguardian / pgBackRest: {ratio:.3f} (goal ≤ {RATIO_TARGET})")


if __name__ == "__main__":
    main()
