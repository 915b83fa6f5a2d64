#!/usr/bin/env python3
"""Benchmark ``dbguardian backup --physical`` against the plain pg_basebackup pipeline it replaces.

Creates a throwaway PostgreSQL 15 cluster archiving WAL into a spool (basic_archive), loads pgbench data
(``--scale``), then times, interleaved round-robin:

  dbguardian-physical   dbguardian backup bench --physical (zstd level 3, threads 2) into a local storage,
                        including its wait for the backup's WAL to be shipped there (the spool is
                        drained, untimed, before each run: the daemon's shipper normally keeps up)
  basebackup-zstd3      pg_basebackup -D - -Ft -X none --checkpoint=fast | zstd -q -3 -T2 > file
  pgbackrest-full       pgbackrest backup --type=full into a local repo: compress-type=zst level 3,
                        process-max=2, start-fast=y, archive-check=n (the cluster archives into
                        dbguardian's spool, so pgBackRest does not wait for the backup's WAL, which
                        dbguardian does: this variant is favoured). Skipped with --no-pgbackrest or
                        without pgbackrest installed.

``--random-mb N`` adds a table of N MB of random hex text (anchors.sh's random_blob): the issue's second
data shape is ``--scale 20 --random-mb 1024`` (1.6 GB).

Every command runs under ``/usr/bin/time -f '%e %M'`` (%M: the largest peak RSS of any single process
of the tree, see backup_bench.py). Prints the medians, the time ratio (goal ≤ 1.10) and peak RSS (goal
≤ 100 MB). Run as root (the server runs as ``postgres``) or as an ordinary user.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dbguardian.archiving.ship import ship_spool  # noqa: E402
from dbguardian.policy import load_policy  # noqa: E402
from dbguardian.throwaway import ThrowawayCluster  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup_bench import ratio_spread  # noqa: E402

PGBIN = Path("/usr/lib/postgresql/15/bin")
MB = 1024 * 1024
TIME_TARGET = 1.10
RSS_TARGET_MB = 100.0


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS MB) of one run."""
    result = subprocess.run(["/usr/bin/time", "-f", "%e %M", *argv], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed: {result.stderr[-2000:]}")
    seconds, rss_kb = result.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(rss_kb) / 1024


def pgbackrest_variant(workdir: Path, cluster: ThrowawayCluster) -> list[str]:
    """Configure a local pgBackRest repo for the cluster (stanza created); the argv of one full backup."""
    root = workdir / "pgbr"
    for sub in ("repo", "log", "lock"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    conf = root / "pgbackrest.conf"
    conf.write_text(
        f"""[global]
repo1-path={root / "repo"}
repo1-retention-full=1
log-path={root / "log"}
lock-path={root / "lock"}
log-level-console=warn
log-level-file=off
process-max=2
compress-type=zst
compress-level=3
start-fast=y
archive-check=n

[bench]
pg1-path={cluster.data_dir}
pg1-port={cluster.port}
pg1-socket-path={cluster.socket_dir}
pg1-user=postgres
"""
    )
    as_owner = ["runuser", "-u", cluster.os_user, "--"] if cluster.os_user else []
    if cluster.os_user:
        subprocess.run(["chown", "-R", f"{cluster.os_user}:", str(root)], check=True)
    base = [*as_owner, "pgbackrest", f"--config={conf}", "--stanza=bench"]
    subprocess.run([*base, "stanza-create"], check=True, capture_output=True)
    return [*base, "--type=full", "backup"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=20, help="pgbench scale (100 ≈ 1.5 GB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--random-mb", type=int, default=0, help="also load this many MB of random hex text")
    parser.add_argument("--no-pgbackrest", action="store_true", help="skip the pgBackRest variant")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dbg-physbench")
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    spool = args.workdir / "pg" / "spool"
    cluster = ThrowawayCluster(
        args.workdir / "pg",
        settings={
            "archive_mode": "on",
            "archive_library": "'basic_archive'",
            "basic_archive.archive_directory": f"'{spool}'",
            "wal_level": "replica",
            "max_wal_senders": "10",
            "fsync": "on",
        },
    )
    cluster.start()
    try:
        spool.mkdir(mode=0o700)
        owner = (cluster.data_dir).stat()
        os.chown(spool, owner.st_uid, owner.st_gid)
        password = secrets.token_urlsafe(12)
        cluster.psql(f"CREATE ROLE bench LOGIN REPLICATION PASSWORD '{password}'")
        cluster.psql("CREATE DATABASE bench OWNER bench")
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGUSER": "bench",
               "PGPASSWORD": password, "PGDATABASE": "bench"}  # fmt: skip
        subprocess.run([str(PGBIN / "pgbench"), "-i", "-q", "-s", str(args.scale)], env=env, check=True)
        if args.random_mb:
            # As anchors.sh: 8 x md5 = 256 random hex chars per row ("g % 1" makes the subquery per row).
            cluster.psql(
                "CREATE TABLE random_blob(id int primary key, payload text); "
                "INSERT INTO random_blob SELECT g, (SELECT string_agg(md5(random()::text), '') "
                f"FROM generate_series(1, 8 + g % 1)) FROM generate_series(1, {args.random_mb} * 1024 * 1024 / 256) g",
                database="bench",
            )
        cluster.psql("CHECKPOINT")
        size = int(cluster.psql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
        password_file = args.workdir / "password"
        password_file.write_text(password)
        password_file.chmod(0o600)
        storage = args.workdir / "storage"
        policy = args.workdir / "policy.yaml"
        policy.write_text(
            f"""version: 1
state_dir: {args.workdir / "state"}
storage:
  local: {{type: local, path: {storage}}}
targets:
  bench:
    dsn: postgresql://bench@127.0.0.1:{cluster.port}/bench
    password_file: {password_file}
    storage: [local]
    compression: {{algorithm: zstd, level: 3, threads: 2}}
    wal: {{spool: {spool}, compression: {{algorithm: zstd, level: 3}}}}
"""
        )
        out = args.workdir / "base.tar.zst"
        variants = {
            "dbguardian-physical": [sys.executable, "-m", "dbguardian", "--log-level", "warning", "--policy", str(policy),
                                    "backup", "bench", "--physical"],
            "basebackup-zstd3": ["bash", "-o", "pipefail", "-c",
                                 f"{PGBIN}/pg_basebackup -D - -Ft -X none --checkpoint=fast --no-password "
                                 f"| zstd -q -3 -T2 > {out}"],
        }  # fmt: skip
        if not args.no_pgbackrest and shutil.which("pgbackrest"):
            variants["pgbackrest-full"] = pgbackrest_variant(args.workdir, cluster)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        in_process: list[float] = []
        bench_env = {**env, "PYTHONPATH": str(REPO)}
        for _ in range(args.runs):
            for name, argv in variants.items():
                # Untimed: ship the WAL the load and the other variant left in the spool, so the timed
                # run ships only its own backup's WAL (as with the daemon's shipper keeping up).
                asyncio.run(ship_spool(load_policy(policy), "bench"))
                results[name].append(timed(argv, bench_env if name.startswith("dbguardian") else env))
                if name == "dbguardian-physical":  # the backup's own time, as a daemon job pays it (no start-up)
                    [manifest] = storage.glob("bench/*/manifest.json")
                    in_process.append(float(json.loads(manifest.read_text())["duration_seconds"]))
                shutil.rmtree(storage, ignore_errors=True)
                out.unlink(missing_ok=True)
        shape = f"pgbench scale {args.scale}" + (f" + {args.random_mb} MB random text" if args.random_mb else "")
        print(f"cluster {size / MB:.0f} MB ({shape}), {args.runs} runs, medians:")
        medians = {}
        for name, rows in results.items():
            seconds = statistics.median(row[0] for row in rows)
            rss = max(row[1] for row in rows)
            medians[name] = seconds
            print(f"  {name:<22} {seconds:8.2f} s  peak RSS {rss:7.1f} MB  {size / MB / seconds:7.1f} MB/s")
        ratio = medians["dbguardian-physical"] / medians["basebackup-zstd3"]
        rss = max(row[1] for row in results["dbguardian-physical"])
        ours, theirs = results["dbguardian-physical"], results["basebackup-zstd3"]
        spread = ratio_spread([row[0] for row in ours], [row[0] for row in theirs])
        print(f"ratio dbguardian / pipeline: {ratio:.3f}{spread} (goal ≤ {TIME_TARGET}); dbguardian peak RSS {rss:.1f} MB "
              f"(goal ≤ {RSS_TARGET_MB:.0f})")  # fmt: skip
        job = statistics.median(in_process)
        print(f"dbguardian in-process (the manifest's duration_seconds: a daemon job, no CLI start-up) {job:.2f} s: "
              f"{job / medians['basebackup-zstd3']:.3f} x the pipeline")  # fmt: skip
        if "pgbackrest-full" in medians:
            versus = medians["dbguardian-physical"] / medians["pgbackrest-full"]
            print(f"ratio dbguardian / pgBackRest full: {versus:.3f} (goal < 1: faster than pgBackRest)")
    finally:
        cluster.stop()
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
