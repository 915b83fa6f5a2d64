"""Idle cost of the daemon: 100 targets (400 jobs) for 60 s; CPU share of one core and RSS.

    .venv/bin/python bench/idle_bench.py [--targets 100] [--seconds 60] [--instances 2 --server]

Targets: < 1 % of a core, < 120 MB RSS per instance. Without ``--server`` the targets point at a server
that does not exist and catch-up is off, so no backup runs: this measures the scheduler, heartbeat and
watchdog alone. With ``--server`` a throwaway PostgreSQL is started and every target's DSN points at it,
so the daemons also do their leader election (``coordination``: one session per daemon, an advisory
lock per target, checked every 5 s); ``--instances 2`` runs two daemons on the same policy, as for HA.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def memory_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--instances", type=int, default=1, help="daemons on the same policy")
    parser.add_argument("--server", action="store_true", help="targets on a real (throwaway) PostgreSQL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dbg-idle-"))
    cluster = None
    dsn = "postgresql://backup@127.0.0.1:1/db{index:03d}"
    if args.server:
        from dbguardian.throwaway import ThrowawayCluster, short_tempdir

        cluster = ThrowawayCluster(short_tempdir("dbgi-") / "pg").start()
        cluster.create_role("backup", "idle-bench-password")
        (work / "pw").write_text("idle-bench-password\n")
        dsn = cluster.dsn("postgres", "backup")
    try:
        results = [run_instances(args, work, dsn, cluster is not None)]
    finally:
        if cluster is not None:
            cluster.stop()
    for lines in results:
        print("\n".join(lines))


def run_instances(args: argparse.Namespace, work: Path, dsn: str, with_password: bool) -> list[str]:
    processes: list[tuple[subprocess.Popen[bytes], int]] = []
    for instance in range(args.instances):
        processes.append(start(args, work / f"instance-{instance}", dsn, work / "pw" if with_password else None))
    lines = [f"# idle daemon: {args.targets} targets, {args.targets * 4} jobs, {args.instances} instance(s), "
             f"{'real server' if with_password else 'no server'}, {args.seconds:g} s, Python {sys.version.split()[0]}",
             f"{'instance':<10}{'metric':<28}{'value':>10}  target"]  # fmt: skip
    try:
        for process, port in processes:
            wait_ready(process, port)
        time.sleep(5)  # past start-up work (the first leadership pass, catch-up reads)
        before = [(cpu_seconds(process.pid), time.monotonic()) for process, _ in processes]
        time.sleep(args.seconds)
        for index, ((process, port), (cpu_before, wall_before)) in enumerate(zip(processes, before, strict=True)):
            share = 100 * (cpu_seconds(process.pid) - cpu_before) / (time.monotonic() - wall_before)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                text = response.read().decode()
            leading = sum(
                1 for line in text.splitlines() if line.startswith("dbguardian_job_leader{") and line.endswith(" 1.0")
            )
            rss_mb = memory_kb(process.pid, "VmRSS") / 1024
            peak_mb = memory_kb(process.pid, "VmHWM") / 1024
            lines += [
                f"{index:<10}{'cpu_share_of_one_core_pct':<28}{share:>10.3f}  < 1 %",
                f"{index:<10}{'rss_mb':<28}{rss_mb:>10.1f}  < 120 MB",
                f"{index:<10}{'peak_rss_mb':<28}{peak_mb:>10.1f}  < 120 MB",
                f"{index:<10}{'metrics_scrape_bytes':<28}{len(text):>10d}",
                f"{index:<10}{'jobs_led':<28}{leading:>10d}",
            ]
    finally:
        for process, _ in processes:
            process.terminate()
        codes = [process.wait(timeout=30) for process, _ in processes]
    lines.append(f"exit codes after SIGTERM: {codes}")
    return lines


def start(args: argparse.Namespace, work: Path, dsn: str, password_file: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    policy = {
        "version": 1,
        "state_dir": str(work / "state"),
        "timezone": "Europe/Berlin",
        "catch_up": False,
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "storage": {"local": {"type": "local", "path": str(work / "backups")}},
        "targets": {
            f"db{index:03d}": {
                "dsn": dsn.format(index=index),
                **({"password_file": str(password_file)} if password_file else {}),
                "storage": ["local"],
                "schedules": {
                    "daily": {"cron": f"{index % 60} 2 * * *", "keep": 7},
                    "weekly": {"cron": "0 3 * * 0", "keep": 4},
                    "monthly": {"cron": "0 4 1 * *", "keep": 12},
                    "hourly": {"every": "1h", "keep": 24},
                },
            }
            for index in range(args.targets)
        },
    }
    work.mkdir(parents=True)
    policy_path = work / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    env = {**os.environ, "WATCHDOG_USEC": "30000000"}  # watchdog pings every 15 s, as under systemd
    process = subprocess.Popen(
        [sys.executable, "-m", "dbguardian", "--log-format", "json", "--policy", str(policy_path), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    return process, port


def wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("daemon did not become ready")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
