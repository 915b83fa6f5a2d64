"""Idle cost of the daemon: 100 targets (400 jobs) for 60 s; CPU share of one core and RSS.

    .venv/bin/python bench/idle_bench.py [--targets 100] [--seconds 60]

Targets: < 1 % of a core, < 120 MB RSS. The targets point at a server that does not exist and
catch-up is off, so no backup runs: this measures the scheduler, heartbeat and watchdog alone.
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
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dbg-idle-"))
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
                "dsn": f"postgresql://backup@127.0.0.1:1/db{index:03d}",
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
    policy_path = work / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy))
    env = {**os.environ, "WATCHDOG_USEC": "30000000"}  # watchdog pings every 15 s, as under systemd
    process = subprocess.Popen(
        [sys.executable, "-m", "dbguardian", "--log-format", "json", "--policy", str(policy_path), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("daemon did not become ready")
            time.sleep(0.2)
        time.sleep(2)  # past start-up work
        cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu_after, wall_after = cpu_seconds(process.pid), time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            scrape_bytes = len(response.read())
        rss_mb = memory_kb(process.pid, "VmRSS") / 1024
        peak_mb = memory_kb(process.pid, "VmHWM") / 1024
    finally:
        process.terminate()
        process.wait(timeout=30)
    share = 100 * (cpu_after - cpu_before) / (wall_after - wall_before)
    jobs = args.targets * 4
    print(f"# idle daemon: {args.targets} targets, {jobs} jobs, {args.seconds:g} s, Python {sys.version.split()[0]}")
    print(f"{'metric':<28}{'value':>10}  target")
    print(f"{'cpu_share_of_one_core_pct':<28}{share:>10.3f}  < 1 %")
    print(f"{'rss_mb':<28}{rss_mb:>10.1f}  < 120 MB")
    print(f"{'peak_rss_mb':<28}{peak_mb:>10.1f}  < 120 MB")
    print(f"{'metrics_scrape_bytes':<28}{scrape_bytes:>10d}")
    print(f"exit code after SIGTERM: {process.returncode}")


if __name__ == "__main__":
    main()
