#!/usr/bin/env python3
"""Benchmark ``dbguardian restore`` (time and peak RSS) against the plain pipelines it replaces.

Creates a throwaway cluster with pgbench data plus random hex text (backup_bench.py's set-up), takes
one dbguardian backup (zstd level 3, local storage), then restores it, interleaved round-robin:

  dbguardian-stream    dbguardian restore bench latest --into DB              (streams into pg_restore)
  dbguardian-jobs2     dbguardian restore bench latest --into DB --jobs 2     (spools, then pg_restore -j2)
  zstd-pg_restore      zstd -dc FILE | pg_restore --exit-on-error -d DB       (bash -o pipefail)
  zstd-file-pg_restore-j2  zstd -d FILE -o X && pg_restore -j2 --exit-on-error -d DB X

Every command runs under ``/usr/bin/time -f '%e %M'``: %M is the largest peak RSS of any single process
in the tree (for dbguardian: max(python, pg_restore) = python). The restored database is dropped after
each run. dbguardian also checks every table's row count after pg_restore (the pipelines do not).

    sudo .venv/bin/python bench/restore_bench.py --scale 20 --random-mb 64 --runs 3
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backup_bench import (
    DEFAULT_PGBIN,
    MB,
    REPO,
    Cluster,
    db_size_pretty,
    log,
    ratio_spread,
    setup_cluster,
    write_policy,
)

DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "dbg-restore-bench"
RSS_TARGET_MB = 100.0
STREAM, JOBS2, PIPE, PIPE_J2 = "dbguardian-stream", "dbguardian-jobs2", "zstd-pg_restore", "zstd-file-pg_restore-j2"
BASELINE = {STREAM: PIPE, JOBS2: PIPE_J2}


@dataclass
class Sample:
    variant: str
    seconds: float
    maxrss_kb: int


def timed(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Sample:
    time_file = workdir / "time.out"
    err_file = workdir / f"{name}.stderr"
    with err_file.open("w") as err:
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", str(time_file), *argv],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=err,
            check=False,
        )
    if done.returncode != 0:
        sys.stderr.write(err_file.read_text()[-4000:])
        raise RuntimeError(f"{name} failed (exit {done.returncode}): {shlex.join(argv)}")
    seconds, maxrss = time_file.read_text().split()[-2:]
    return Sample(name, float(seconds), int(maxrss))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=20, help="pgbench scale (~15 MB each)")
    parser.add_argument("--random-mb", type=int, default=64, help="MB of random hex text (incompressible-ish)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--pgbin", type=Path, default=DEFAULT_PGBIN)
    parser.add_argument("--dbguardian", type=Path, default=REPO / ".venv" / "bin" / "dbguardian")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running (and its files) afterwards")
    args = parser.parse_args(argv)
    if shutil.which("zstd") is None:
        raise SystemExit("zstd is not installed")

    cluster = Cluster(args.workdir, args.pgbin)
    setup_cluster(cluster, args.scale, args.random_mb)
    try:
        return bench(args, cluster)
    finally:
        if not args.keep:
            cluster.remove()


def bench(args: argparse.Namespace, cluster: Cluster) -> int:
    workdir: Path = args.workdir
    policy = workdir / "policy.yaml"
    storage = write_policy(policy, workdir / "dbg", cluster, "socket", os.cpu_count() or 1)
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    dbg = [str(args.dbguardian), "--policy", str(policy), "--log-level", "warning"]
    log("dbguardian backup")
    subprocess.run([*dbg, "backup", "bench"], env=clean_env, check=True, stdout=subprocess.DEVNULL)
    [dump] = storage.rglob("dump.pgc.zst")
    log(f"database {db_size_pretty(cluster)}, backup {dump.stat().st_size / MB:.1f} MB")
    pg_env = {**cluster.env(), "PGDATABASE": "postgres"}
    spool = workdir / "spool.pgc"
    pg_restore, createdb, dropdb = (shlex.quote(cluster.tool(name)) for name in ("pg_restore", "createdb", "dropdb"))
    into = "restored"
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        STREAM: ([*dbg, "restore", "bench", "latest", "--into", into], clean_env),
        JOBS2: ([*dbg, "restore", "bench", "latest", "--into", into, "--jobs", "2"], clean_env),
        PIPE: (
            ["bash", "-o", "pipefail", "-c",
             f"{createdb} {into} && zstd -q -dc {shlex.quote(str(dump))} | {pg_restore} --exit-on-error -d {into}"],
            pg_env,
        ),
        PIPE_J2: (
            ["bash", "-o", "pipefail", "-c",
             f"{createdb} {into} && zstd -q -d -f {shlex.quote(str(dump))} -o {spool} && "
             f"{pg_restore} -j2 --exit-on-error -d {into} {spool}; status=$?; rm -f {spool}; exit $status"],
            pg_env,
        ),
    }  # fmt: skip
    samples: list[Sample] = []
    names = list(commands)
    for run_no in range(1, args.runs + 1):
        order = names if run_no % 2 else list(reversed(names))
        for name in order:
            subprocess.run(["bash", "-c", f"{dropdb} --if-exists {into}"], env=pg_env, check=True)
            os.sync()
            command, env = commands[name]
            sample = timed(name, command, env, workdir)
            samples.append(sample)
            log(f"{name:<24} run {run_no}: {sample.seconds:7.2f}s  rss {sample.maxrss_kb / 1024:6.1f} MB")
            time.sleep(0.3)
    subprocess.run(["bash", "-c", f"{dropdb} --if-exists {into}"], env=pg_env, check=True)
    print(report(samples, args, db_size_pretty(cluster), dump.stat().st_size))
    return 0


def report(samples: list[Sample], args: argparse.Namespace, db_size: str, backup_bytes: int) -> str:
    lines = [
        f"restore bench: pgbench -s {args.scale} + {args.random_mb} MB random text = {db_size}, "
        f"backup {backup_bytes / MB:.1f} MB (zstd 3), {args.runs} interleaved runs, {os.cpu_count()} CPUs",
        f"{'variant':<24} {'median s':>9} {'peak RSS MB (median / max)':>28}",
    ]
    medians: dict[str, tuple[float, float]] = {}
    for name in dict.fromkeys(s.variant for s in samples):
        mine = [s for s in samples if s.variant == name]
        seconds = statistics.median(s.seconds for s in mine)
        rss = statistics.median(s.maxrss_kb / 1024 for s in mine)
        medians[name] = (seconds, rss)
        lines.append(f"{name:<24} {seconds:9.2f} {rss:18.1f} / {max(s.maxrss_kb for s in mine) / 1024:6.1f}")
    for name, baseline in BASELINE.items():
        if name in medians and baseline in medians:
            (seconds, rss), (base_seconds, base_rss) = medians[name], medians[baseline]
            verdict = "ok" if max(s.maxrss_kb for s in samples if s.variant == name) / 1024 <= RSS_TARGET_MB else "OVER"
            spread = ratio_spread(
                [s.seconds for s in samples if s.variant == name], [s.seconds for s in samples if s.variant == baseline]
            )
            lines.append(
                f"{name} / {baseline}: time {seconds / base_seconds:.2f}x{spread}, peak RSS {rss / base_rss:.2f}x "
                f"(max {RSS_TARGET_MB:.0f} MB: {verdict})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
