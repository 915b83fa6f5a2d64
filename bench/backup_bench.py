#!/usr/bin/env python3
"""Benchmark ``dbguardian backup`` against the plain pg_dump pipelines it replaces.

Creates a throwaway PostgreSQL cluster loaded with pgbench data (plus, optionally, a table of random
hex text; the same setup as /work/shared/bench/anchors.sh), then times, interleaved round-robin:

  dbguardian-zstd3   dbguardian backup (zstd level 3, threads = CPUs) into a local storage
  pgdump-Z0-zstd3    pg_dump -Fc -Z0 DB | zstd -q -3 -T<CPUs> > file      (bash -o pipefail)
  pgdump-Fc-gzip     pg_dump -Fc DB > file                                (pg_dump's built-in gzip)

With ``--offsite``, also two destinations with encryption:

  dbguardian-local+s3-age  dbguardian backup to a local storage and an S3 bucket, age-encrypted
  pgdump-Z0-zstd3-age      pg_dump -Fc -Z0 DB | zstd -q -3 -T<CPUs> | age -r KEY > file
  pgdump-zstd3-age-tee-s3  the same | tee file | python: boto3 upload_fileobj(stdin) (like `aws s3 cp -`)

The S3 API is moto's server, started by this script in a process of its own (so it is in no measured
process tree). Moto keeps objects in memory (several times their size); they are deleted after every run.

Every command runs under ``/usr/bin/time -f '%e %M %U %S'``. GNU time's %M is ru_maxrss from wait4(),
which on Linux is the largest peak RSS of any *single* process in the waited-for tree (the process and
its reaped descendants; a maximum, not a sum). So for dbguardian it is max(python, pg_dump) = the
python process, and for a pipeline it is its largest member (zstd). Server backends are not included.

Run as root (the server runs as the ``postgres`` OS user) or as an ordinary user. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DB = "bench"
DEFAULT_PGBIN = Path("/usr/lib/postgresql/15/bin")
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "dbg-bench"
MARKER = "dbg-bench-cluster"
MB = 1024 * 1024
TIME_FORMAT = "%e %M %U %S"
TIME_TARGET = 1.10  # dbguardian / zstd pipeline, from the issue
RSS_TARGET_MB = 100.0
IDLE_CPU = 0.15  # CPU-seconds per second below which the machine counts as idle (--wait-idle)
CLK_TCK = os.sysconf("SC_CLK_TCK")

DBGUARDIAN = "dbguardian-zstd3"
ZSTD_PIPE = "pgdump-Z0-zstd3"
GZIP_DUMP = "pgdump-Fc-gzip"
OFFSITE = "dbguardian-local+s3-age"
AGE_PIPE = "pgdump-Z0-zstd3-age"
AGE_TEE_S3 = "pgdump-zstd3-age-tee-s3"
TEE_S3_KEY = "tee/dump.fc.zst.age"
# What a user would write for an off-site copy without dbguardian (`aws s3 cp -` is the same s3transfer
# code): stream stdin to S3 with boto3's managed multipart upload (8 MiB parts, 10 threads).
UPLOAD_STDIN = (
    "import os, sys, boto3\n"
    "boto3.client('s3', endpoint_url=os.environ['BENCH_S3_URL'], region_name=os.environ['AWS_DEFAULT_REGION'])"
    ".upload_fileobj(sys.stdin.buffer, os.environ['BENCH_S3_BUCKET'], os.environ['BENCH_S3_KEY'])\n"
)
S3_BUCKET = "dbg-bench"
S3_REGION = "us-east-1"
S3_ACCESS_KEY_ID = "AKIDDBGUARDIANBENCH1"
S3_SECRET_ACCESS_KEY = "dbguardian-bench-secret"  # noqa: S105 -- moto accepts any credentials; these only sign requests


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, capture: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        check=check,
        text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class Cluster:
    workdir: Path
    pgbin: Path

    @property
    def data(self) -> Path:
        return self.workdir / "pg" / "data"

    @property
    def sock(self) -> Path:
        return self.workdir / "pg" / "sock"

    @property
    def port(self) -> int:
        return int((self.workdir / "port").read_text())

    @property
    def owner(self) -> str | None:
        """The OS user that runs the server: ``postgres`` when we are root, else ourselves (None)."""
        return "postgres" if os.geteuid() == 0 else None

    def as_owner(self, argv: Sequence[str]) -> list[str]:
        return ["runuser", "-u", self.owner, "--", *argv] if self.owner else list(argv)

    def tool(self, name: str) -> str:
        return str(self.pgbin / name)

    def env(self, transport: str = "socket") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            PGHOST=str(self.sock) if transport == "socket" else "127.0.0.1",
            PGPORT=str(self.port),
            PGUSER="postgres",
            PGDATABASE=DB,
        )
        return env

    def dsn(self, transport: str) -> str:
        if transport == "socket":
            return f"postgresql://postgres@/{DB}?host={self.sock}&port={self.port}"
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DB}"

    def psql(self, sql: str, **variables: int) -> str:
        """Run ``sql`` (a script on stdin, so ``:name`` psql variables are interpolated)."""
        argv = [self.tool("psql"), "-AtqX", "-v", "ON_ERROR_STOP=1"]
        for name, value in variables.items():
            argv += ["-v", f"{name}={value}"]
        out = subprocess.run(argv, env=self.env(), input=sql, text=True, capture_output=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        status = run(self.as_owner([self.tool("pg_ctl"), "-D", str(self.data), "status"]), capture=True, check=False)
        return status.returncode == 0

    def pg_ctl(self, *args: str) -> None:
        log_file = self.workdir / "pg" / "server.log"
        run(
            self.as_owner([self.tool("pg_ctl"), "-D", str(self.data), "-l", str(log_file), "-w", "-t", "120", *args]),
            capture=True,
        )

    def stop(self) -> None:
        if self.running():
            log(f"stopping the cluster in {self.workdir}")
            self.pg_ctl("-m", "fast", "stop")

    def remove(self) -> None:
        self.stop()
        if self.workdir.exists():
            if not (self.workdir / MARKER).exists():
                raise SystemExit(f"refusing to delete {self.workdir}: not created by this script (no {MARKER})")
            shutil.rmtree(self.workdir)
            log(f"removed {self.workdir}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def estimated_db_mb(scale: int, random_mb: int) -> int:
    # pgbench: ~15 MB per scale unit (1503 MB at scale 100); random_blob: ~1.3x its payload incl. index
    return 15 * scale + (random_mb * 13) // 10


def check_disk(workdir: Path, scale: int, random_mb: int, reuse: bool) -> None:
    db_mb = estimated_db_mb(scale, random_mb)
    # cluster + WAL during the load (max_wal_size 8GB caps it) + one output per variant (worst: ~raw size)
    need_mb = (0 if reuse else db_mb + min(db_mb, 8192)) + 3 * db_mb // 2 + 2048
    probe = workdir if workdir.exists() else workdir.parent
    free_mb = shutil.disk_usage(probe).free // MB
    log(f"disk: {free_mb} MB free under {probe}, estimated need {need_mb} MB (db ~{db_mb} MB)")
    if free_mb < need_mb:
        raise SystemExit(f"not enough disk space: {free_mb} MB free, need about {need_mb} MB")


def setup_cluster(cluster: Cluster, scale: int, random_mb: int, load: Callable[[Cluster], None] | None = None) -> None:
    """A fresh cluster with db ``bench``: pgbench data (none with scale 0), random text, then ``load(cluster)``."""
    if cluster.workdir.exists():
        cluster.remove()
    (cluster.workdir / "pg").mkdir(parents=True)
    (cluster.workdir / MARKER).touch()
    cluster.sock.mkdir()
    if len(str(cluster.sock)) > 90:
        raise SystemExit(f"socket directory path too long for a unix socket: {cluster.sock}")
    cluster.workdir.chmod(0o755)
    if cluster.owner:
        run(["chown", "-R", cluster.owner, str(cluster.workdir / "pg")])
    (cluster.workdir / "port").write_text(f"{free_port()}\n")
    (cluster.workdir / "params.json").write_text(json.dumps({"scale": scale, "random_mb": random_mb}))

    started = time.monotonic()
    log(f"initdb {cluster.data} (port {cluster.port})")
    run(
        cluster.as_owner(
            [
                cluster.tool("initdb"),
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-N",
            ]
        ),
        capture=True,
    )
    # Same settings as anchors.sh: load with wal_level=minimal, then restart with replica.
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# --- backup_bench.py (same as anchors.sh) ---\n"
            f"listen_addresses = '127.0.0.1'\nport = {cluster.port}\n"
            f"unix_socket_directories = '{cluster.sock}'\n"
            "shared_buffers = 512MB\nmaintenance_work_mem = 256MB\nmax_wal_size = 8GB\n"
            "checkpoint_timeout = 30min\narchive_mode = off\nwal_level = minimal\nmax_wal_senders = 0\n"
        )
    cluster.pg_ctl("start")
    env = cluster.env()
    run([cluster.tool("createdb"), DB], env=env)
    if scale > 0:
        log(f"pgbench -i -s {scale}")
        run([cluster.tool("pgbench"), "-i", "-q", "-s", str(scale), DB], env=env, capture=True)
    if random_mb > 0:
        log(f"adding {random_mb} MB of random hex text (table random_blob)")
        # Same statement as anchors.sh: 8 x md5 = 256 random hex chars per row; "g % 1" correlates the
        # subquery so that it is evaluated for every row.
        cluster.psql(
            "CREATE TABLE random_blob(id int primary key, payload text);\n"
            "INSERT INTO random_blob SELECT g, (SELECT string_agg(md5(random()::text), '')"
            " FROM generate_series(1, 8 + g % 1))"
            " FROM generate_series(1, :random_mb * 1024 * 1024 / 256) g;\n",
            random_mb=random_mb,
        )
    if load is not None:  # still with wal_level = minimal (storage_bench.py's incompressible rows)
        load(cluster)
    cluster.psql("VACUUM ANALYZE")
    cluster.psql("CHECKPOINT")
    conf_path = cluster.data / "postgresql.conf"
    text = conf_path.read_text()
    text = text.replace("wal_level = minimal\n", "wal_level = replica\n").replace(
        "max_wal_senders = 0\n", "max_wal_senders = 10\n"
    )
    conf_path.write_text(text)  # an existing file keeps its owner
    cluster.pg_ctl("-m", "fast", "restart")
    log(f"cluster ready in {time.monotonic() - started:.0f}s; db size {db_size_pretty(cluster)}")


def db_size_pretty(cluster: Cluster) -> str:
    return cluster.psql(f"select pg_size_pretty(pg_database_size('{DB}'))")


def raw_dump_bytes(cluster: Cluster, transport: str) -> int:
    """Size of ``pg_dump -Fc -Z0`` of the database; also warms the page cache before the timed runs."""
    log("warm-up: pg_dump -Fc -Z0 | wc -c (untimed; also the uncompressed size)")
    raw = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{shlex.quote(cluster.tool('pg_dump'))} -Fc -Z0 {DB} | wc -c"],
        env=cluster.env(transport),
        check=True,
        text=True,
        stdout=subprocess.PIPE,
    )
    return int(raw.stdout.strip())


# ------------------------------------------------------------------------------------------ variants


@dataclass
class Sample:
    variant: str
    run: int
    seconds: float
    maxrss_kb: int
    cpu_seconds: float
    size_bytes: int
    server_cpu_seconds: float  # CPU used by the cluster's processes (backends) during the run
    other_cpu_seconds: float  # CPU used by everything else on the machine during the run (noise)
    inner_seconds: float | None = None  # dbguardian's own duration_seconds from its manifest


@dataclass
class Variant:
    name: str
    argv: list[str]
    env: dict[str, str]
    output: Path
    check: Callable[[Path], None]
    inner: Callable[[Path], float | None] = field(default=lambda _path: None)
    baselines: tuple[tuple[str, float | None], ...] = ()  # (variant, time-ratio target) to compare with
    cleanup: Callable[[], None] = field(default=lambda: None)  # after every run (e.g. empty the bucket)


def check_zstd(path: Path) -> None:
    run(["zstd", "-q", "-t", str(path)])


def check_custom_dump(path: Path, pgbin: Path) -> None:
    listing = run([str(pgbin / "pg_restore"), "-l", str(path)], capture=True)
    if "TABLE DATA" not in listing.stdout:
        raise RuntimeError(f"{path}: pg_restore -l lists no table data")


def only_backup_dir(storage: Path) -> Path:
    found = [p for p in (storage / "bench").iterdir() if p.is_dir()] if (storage / "bench").is_dir() else []
    if len(found) != 1:
        raise RuntimeError(f"expected exactly one backup under {storage / 'bench'}, found {found}")
    return found[0]


def check_dbguardian(storage: Path) -> None:
    backup = only_backup_dir(storage)
    manifest = json.loads((backup / "manifest.json").read_text())
    dump = backup / "dump.pgc.zst"
    if manifest["size_bytes"] != dump.stat().st_size:
        raise RuntimeError(f"{dump}: size {dump.stat().st_size} != manifest size_bytes {manifest['size_bytes']}")
    check_zstd(dump)


def check_age_zstd(path: Path, identity: Path) -> None:
    """Decrypt ``path`` with the age identity and test the zstd stream inside."""
    run(["bash", "-o", "pipefail", "-c", f"age -d -i {shlex.quote(str(identity))} {shlex.quote(str(path))} | zstd -q -t"])


def dbguardian_inner_seconds(storage: Path) -> float | None:
    manifest = json.loads((only_backup_dir(storage) / "manifest.json").read_text())
    seconds = manifest.get("duration_seconds")
    return float(seconds) if seconds is not None else None


def write_policy(
    path: Path, workdir: Path, cluster: Cluster, transport: str, threads: int, offsite: Offsite | None = None
) -> Path:
    storage = workdir / "backups"
    lines = [
        "version: 1",
        f"state_dir: {workdir / 'state'}",
        "storage:",
        f"  local: {{type: local, path: {storage}}}",
    ]
    if offsite is not None:
        lines += [
            "  offsite:",
            f"    {{type: s3, bucket: {S3_BUCKET}, prefix: dbg, region: {S3_REGION}, endpoint_url: '{offsite.url}',",
            "     addressing_style: path,",
            f"     access_key_id_file: {offsite.key_files[0]}, secret_access_key_file: {offsite.key_files[1]}}}",
        ]
    lines += [
        "targets:",
        "  bench:",
        f"    dsn: {cluster.dsn(transport)}",
        "    storage: [local, offsite]" if offsite is not None else "    storage: [local]",
        f"    compression: {{algorithm: zstd, level: 3, threads: {threads}}}",
    ]
    if offsite is not None:
        lines.append(f"    encryption: {{method: age, recipients: ['{offsite.age_recipient}']}}")
    path.write_text("\n".join(lines) + "\n")
    return storage


# ------------------------------------------------------------------------------- off-site (S3 + age)


@dataclass
class Offsite:
    """moto's S3 server in a process of its own, one bucket, key files and an age key pair."""

    url: str
    process: subprocess.Popen[bytes]
    key_files: tuple[Path, Path]
    age_identity: Path
    age_recipient: str

    @classmethod
    def start(cls, workdir: Path) -> Offsite:
        for tool in ("age", "age-keygen"):
            if not shutil.which(tool):
                raise SystemExit(f"--offsite needs {tool} (apt-get install age)")
        port = free_port()
        server_log = (workdir / "moto.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise SystemExit(f"moto's S3 server did not start (see {workdir / 'moto.log'})") from None
                time.sleep(0.2)
        keys = workdir / "s3-keys"
        keys.mkdir(exist_ok=True)
        key_files = (keys / "access_key_id", keys / "secret_access_key")
        key_files[0].write_text(S3_ACCESS_KEY_ID + "\n")
        key_files[1].write_text(S3_SECRET_ACCESS_KEY + "\n")
        identity = workdir / "age-identity.txt"
        identity.unlink(missing_ok=True)
        run(["age-keygen", "-o", str(identity)], capture=True)
        recipient = run(["age-keygen", "-y", str(identity)], capture=True).stdout.strip()
        offsite = cls(f"http://127.0.0.1:{port}", process, key_files, identity, recipient)
        offsite.client().create_bucket(Bucket=S3_BUCKET)
        log(f"moto S3 server at {offsite.url} (pid {process.pid}), bucket {S3_BUCKET}")
        return offsite

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=S3_REGION,
            aws_access_key_id=S3_ACCESS_KEY_ID,
            aws_secret_access_key=S3_SECRET_ACCESS_KEY,
        )

    def objects(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET):
            sizes.update({item["Key"]: int(item["Size"]) for item in page.get("Contents", [])})
        return sizes

    def empty(self) -> None:
        """Delete every object and abort every open multipart upload (frees moto's memory)."""
        client = self.client()
        uploads = client.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", [])
        for upload in uploads:
            client.abort_multipart_upload(Bucket=S3_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
        for key in self.objects():
            client.delete_object(Bucket=S3_BUCKET, Key=key)

    def check_backup(self, storage: Path) -> None:
        """The local copy and the S3 copy hold every object of the manifest, at its size; the dump decrypts."""
        backup = only_backup_dir(storage)
        manifest = json.loads((backup / "manifest.json").read_text())
        if manifest.get("encryption", {}).get("method") != "age":
            raise RuntimeError(f"{backup}: manifest says encryption {manifest.get('encryption')}, expected age")
        remote = self.objects()
        prefix = f"dbg/bench/{backup.name}/"
        if prefix + "manifest.json" not in remote:
            raise RuntimeError(f"no manifest in S3 under {prefix}: {sorted(remote)}")
        for name, stored in manifest["objects"].items():
            local = storage / stored["key"]
            if local.stat().st_size != stored["size_bytes"]:
                raise RuntimeError(f"{local}: size {local.stat().st_size} != manifest {stored['size_bytes']}")
            if remote.get("dbg/" + stored["key"]) != stored["size_bytes"]:
                raise RuntimeError(f"S3 object for {name}: {remote.get('dbg/' + stored['key'])} != {stored['size_bytes']}")
        check_age_zstd(storage / manifest["objects"]["dump"]["key"], self.age_identity)

    def env(self, key: str) -> dict[str, str]:
        return {
            "BENCH_S3_URL": self.url,
            "BENCH_S3_BUCKET": S3_BUCKET,
            "BENCH_S3_KEY": key,
            "AWS_DEFAULT_REGION": S3_REGION,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
        }

    def check_tee_upload(self, path: Path) -> None:
        """The uploaded object has the file's size, and the file decrypts to a valid zstd stream."""
        uploaded = self.objects().get(TEE_S3_KEY)
        if uploaded != path.stat().st_size:
            raise RuntimeError(f"S3 object {TEE_S3_KEY}: {uploaded} bytes, the file has {path.stat().st_size}")
        check_age_zstd(path, self.age_identity)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def build_variants(args: argparse.Namespace, cluster: Cluster, jobs: int, offsite: Offsite | None = None) -> list[Variant]:
    out = args.workdir / "out"
    out.mkdir(exist_ok=True)
    pg_env = cluster.env(args.transport)
    pg_dump = shlex.quote(cluster.tool("pg_dump"))
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    variants: list[Variant] = []

    def dbguardian(name: str, command: list[str], env: dict[str, str], to: Offsite | None = None) -> Variant:
        """dbguardian backing up to local storage, or with ``to`` also to S3 with age."""
        policy = args.workdir / f"policy-{name}.yaml"
        storage = write_policy(policy, args.workdir / name, cluster, args.transport, args.zstd_threads, offsite=to)
        variant = Variant(
            name=name,
            argv=[*command, "--policy", str(policy), "--log-level", "warning", "backup", "bench"],
            env=env,
            output=storage,
            check=check_dbguardian,
            inner=dbguardian_inner_seconds,
            baselines=((ZSTD_PIPE, TIME_TARGET), (GZIP_DUMP, None)),
        )
        if to is not None:
            variant.check, variant.cleanup = to.check_backup, to.empty
            variant.baselines = ((AGE_PIPE, None), (AGE_TEE_S3, None))  # the issue sets only a peak RSS target
        return variant

    variants.append(dbguardian(DBGUARDIAN, [str(args.dbguardian)], clean_env))
    for spec in args.alt:
        label, _, pythonpath = spec.partition("=")
        python = args.dbguardian.parent / "python"
        env = {**clean_env, "PYTHONPATH": pythonpath}
        # -P: do not put the current directory first on sys.path (from a checkout, "python -m dbguardian"
        # would import ./dbguardian instead of the PYTHONPATH copy).
        check_import(python, env, Path(pythonpath))
        variants.append(dbguardian(f"{DBGUARDIAN}-{label}", [str(python), "-P", "-m", "dbguardian"], env))
        if offsite is not None:  # the same copy on the local + S3 + age path
            variants.append(dbguardian(f"{OFFSITE}-{label}", [str(python), "-P", "-m", "dbguardian"], env, to=offsite))
    for spec in args.extra:
        label, _, command = spec.partition("=")
        scratch = out / label
        variants.append(
            Variant(
                name=label,
                argv=["bash", "-o", "pipefail", "-c", command],
                env={**pg_env, "BENCH_OUT": str(scratch)},
                output=scratch,
                check=lambda _path: None,
            )
        )
    zst = out / "dump.fc.zst"
    variants.append(
        Variant(
            name=ZSTD_PIPE,
            argv=[
                "bash",
                "-o",
                "pipefail",
                "-c",
                f"{pg_dump} -Fc -Z0 {DB} | zstd -q -3 -T{jobs} > {shlex.quote(str(zst))}",
            ],
            env=pg_env,
            output=zst,
            check=check_zstd,
        )
    )
    fc = out / "dump.fc"
    variants.append(
        Variant(
            name=GZIP_DUMP,
            argv=["bash", "-o", "pipefail", "-c", f"{pg_dump} -Fc {DB} > {shlex.quote(str(fc))}"],
            env=pg_env,
            output=fc,
            check=lambda path: check_custom_dump(path, cluster.pgbin),
        )
    )
    if offsite is not None:
        variants.append(dbguardian(OFFSITE, [str(args.dbguardian)], clean_env, to=offsite))
        aged = out / "dump.fc.zst.age"
        encrypted = f"{pg_dump} -Fc -Z0 {DB} | zstd -q -3 -T{jobs} | age -r {shlex.quote(offsite.age_recipient)}"
        pipeline = f"{encrypted} > {shlex.quote(str(aged))}"
        variants.append(
            Variant(
                name=AGE_PIPE,
                argv=["bash", "-o", "pipefail", "-c", pipeline],
                env=pg_env,
                output=aged,
                check=lambda path: check_age_zstd(path, offsite.age_identity),
            )
        )
        teed = out / "tee.fc.zst.age"
        upload = f"{shlex.quote(sys.executable)} -c {shlex.quote(UPLOAD_STDIN)}"
        variants.append(
            Variant(
                name=AGE_TEE_S3,
                argv=["bash", "-o", "pipefail", "-c", f"{encrypted} | tee {shlex.quote(str(teed))} | {upload}"],
                env={**pg_env, **offsite.env(TEE_S3_KEY)},
                output=teed,
                check=offsite.check_tee_upload,
                cleanup=offsite.empty,
            )
        )
    return [v for v in variants if re.search(args.only, v.name)]


def check_import(python: Path, env: dict[str, str], expected: Path) -> None:
    """Make sure an --alt variant really runs the copy under ``expected``."""
    where = run(
        [str(python), "-P", "-c", "import dbguardian; print(dbguardian.__file__)"], env=env, capture=True
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(expected.resolve()):
        raise SystemExit(f"--alt: PYTHONPATH={expected} imports dbguardian from {where}")
    log(f"--alt variant imports {where}")


def remove_output(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy since boot (all CPUs, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cluster_cpu_seconds(cluster: Cluster) -> float:
    """CPU seconds of the postmaster, its live children and its reaped children (exited backends)."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster:
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == postmaster:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def wait_for_idle(max_wait: float) -> None:
    """Wait (up to ``max_wait`` s) until the machine is idle: < IDLE_CPU CPU-seconds used per second."""
    started = time.monotonic()
    while True:
        before = machine_busy_seconds()
        time.sleep(1)
        used = machine_busy_seconds() - before
        if used < IDLE_CPU:
            return
        waited = time.monotonic() - started
        if waited >= max_wait:
            log(f"machine still busy ({used:.2f} CPU) after waiting {waited:.0f}s; running anyway")
            return
        if waited < 1.5:
            log(f"machine busy ({used:.2f} CPU): waiting for it to be idle (up to {max_wait:.0f}s)")


def run_variant(variant: Variant, run_no: int, workdir: Path, cluster: Cluster, wait_idle: float) -> Sample:
    remove_output(variant.output)
    variant.cleanup()
    os.sync()
    if wait_idle > 0:
        wait_for_idle(wait_idle)
    time_file = workdir / "time.out"
    busy_before = machine_busy_seconds()
    server_before = cluster_cpu_seconds(cluster)
    err_file = workdir / f"{variant.name}.stderr"
    with err_file.open("w") as err:
        result = subprocess.run(
            ["/usr/bin/time", "-f", TIME_FORMAT, "-o", str(time_file), *variant.argv],
            env=variant.env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=err,
            check=False,
        )
    if result.returncode != 0:
        sys.stderr.write(err_file.read_text()[-4000:])
        raise RuntimeError(f"{variant.name} run {run_no} failed (exit {result.returncode}): {shlex.join(variant.argv)}")
    time.sleep(0.3)  # let the backends of the run exit (and be reaped by the postmaster)
    server_cpu = cluster_cpu_seconds(cluster) - server_before
    busy = machine_busy_seconds() - busy_before
    seconds, maxrss, user, system = time_file.read_text().split()[-4:]
    cpu = float(user) + float(system)
    variant.check(variant.output)
    sample = Sample(
        variant=variant.name,
        run=run_no,
        seconds=float(seconds),
        maxrss_kb=int(maxrss),
        cpu_seconds=cpu,
        size_bytes=tree_bytes(variant.output),
        server_cpu_seconds=server_cpu,
        other_cpu_seconds=max(0.0, busy - cpu - server_cpu),
        inner_seconds=variant.inner(variant.output),
    )
    remove_output(variant.output)  # keep the disk from filling up
    variant.cleanup()
    inner = f"  (in-process {sample.inner_seconds:.2f}s)" if sample.inner_seconds is not None else ""
    log(
        f"{variant.name:<26} run {run_no}: {sample.seconds:7.2f}s  rss {sample.maxrss_kb // 1024:5d} MB  "
        f"cpu {sample.cpu_seconds:6.2f}s  server cpu {server_cpu:5.2f}s  "
        f"size {sample.size_bytes / MB:8.1f} MB  other cpu {sample.other_cpu_seconds:5.2f}s{inner}"
    )
    return sample


# ------------------------------------------------------------------------------------------- report


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def git_describe() -> str:
    head = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture=True, check=False).stdout.strip()
    dirty = run(["git", "-C", str(REPO), "status", "--porcelain", "--", "dbguardian"], capture=True, check=False)
    changed = len(dirty.stdout.splitlines())
    return f"{head or '?'}" + (f" + {changed} uncommitted change(s) under dbguardian/" if changed else " (clean)")


def report(samples: Sequence[Sample], header: Sequence[str], variants: Sequence[Variant]) -> str:
    names: list[str] = []
    for sample in samples:
        if sample.variant not in names:
            names.append(sample.variant)
    lines = list(header)
    lines.append("# median of N runs; peak_rss_MB = largest single process of the command (GNU time %M),")
    lines.append("#   max over the runs, server backends excluded; cpu_s = user+sys of the command and its")
    lines.append("#   children; srv_cpu_s = CPU of the cluster's processes during the run; inner_s = dbguardian's")
    lines.append("#   own duration_seconds (manifest; no interpreter start-up); other_cpu_s = CPU used by")
    lines.append("#   anything else on the machine during the run (noise indicator; 0 = quiet machine)")
    lines.append(
        f"{'variant':<26} {'N':>3} {'median_s':>9} {'range_s':>13} {'peak_rss_MB':>12} {'cpu_s':>7} "
        f"{'srv_cpu_s':>9} {'size_MB':>9} {'inner_s':>8} {'other_cpu_s':>11}"
    )
    medians: dict[str, float] = {}
    rss: dict[str, float] = {}
    for name in names:
        rows = [s for s in samples if s.variant == name]
        secs = [s.seconds for s in rows]
        medians[name] = median(secs)
        rss[name] = max(s.maxrss_kb for s in rows) / 1024
        inner = [s.inner_seconds for s in rows if s.inner_seconds is not None]
        inner_text = f"{median(inner):.2f}" if inner else "-"
        lines.append(
            f"{name:<26} {len(rows):>3} {medians[name]:>9.2f} {f'{min(secs):.2f}-{max(secs):.2f}':>13} "
            f"{rss[name]:>12.0f} {median([s.cpu_seconds for s in rows]):>7.2f} "
            f"{median([s.server_cpu_seconds for s in rows]):>9.2f} "
            f"{median([s.size_bytes for s in rows]) / MB:>9.1f} {inner_text:>8} "
            f"{median([s.other_cpu_seconds for s in rows]):>11.2f}"
        )
    baselines = {v.name: v.baselines for v in variants}
    for name in names:
        if not baselines.get(name):
            continue
        for base, target in baselines[name]:
            if base in medians:
                ratio = medians[name] / medians[base]
                verdict = f"  target <= {target:.2f}: {'PASS' if ratio <= target else 'FAIL'}" if target else ""
                lines.append(f"ratio {name} / {base}: {ratio:.3f}{verdict}{per_round_ratios(samples, name, base)}")
        lines.append(
            f"peak RSS {name}: {rss[name]:.0f} MB  target <= {RSS_TARGET_MB:.0f} MB: "
            f"{'PASS' if rss[name] <= RSS_TARGET_MB else 'FAIL'}"
        )
    return "\n".join(lines) + "\n"


def per_round_ratios(samples: Sequence[Sample], name: str, base: str) -> str:
    """Min/median/max over rounds of time(name) / time(base), each round's pair run back to back."""
    mine = {s.run: s.seconds for s in samples if s.variant == name}
    theirs = {s.run: s.seconds for s in samples if s.variant == base}
    rounds = sorted(mine.keys() & theirs.keys())
    return ratio_spread([mine[run] for run in rounds], [theirs[run] for run in rounds])


def ratio_spread(numerators: Sequence[float], denominators: Sequence[float]) -> str:
    """``  (per round: min …, median …, max …)`` of the pairwise ratios (round i of one over round i of the other)."""
    ratios = [top / bottom for top, bottom in zip(numerators, denominators, strict=True) if bottom > 0]
    if not ratios:
        return ""
    return f"  (per round: min {min(ratios):.3f}, median {median(ratios):.3f}, max {max(ratios):.3f})"


def tool_version(argv: Sequence[str], pattern: str) -> str:
    out = run(argv, capture=True, check=False)
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "?"


def build_header(args: argparse.Namespace, cluster: Cluster, raw_bytes: int, jobs: int) -> list[str]:
    params = json.loads((args.workdir / "params.json").read_text())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    zstandard_version = tool_version(
        [str(args.dbguardian.parent / "python"), "-c", "import zstandard; print(zstandard.__version__)"],
        r"(\S+)",
    )
    postgres_version = tool_version([cluster.tool("postgres"), "--version"], r"(\d+\.\d+)")
    zstd_version = tool_version(["zstd", "-V"], r"(v[0-9.]+)")
    return [
        f"# backup_bench: pgbench scale {params['scale']}, RANDOM_MB={params['random_mb']}"
        f" (db '{DB}' = {db_size_pretty(cluster)}),"
        f" uncompressed dump (pg_dump -Fc -Z0) = {raw_bytes // MB} MB",
        f"# {os.cpu_count()} CPUs, {mem_gib:.0f} GiB RAM, {platform.machine()}, PostgreSQL "
        f"{postgres_version}, zstd {zstd_version}, python-zstandard {zstandard_version}, "
        f"zstd threads: pipeline -T{jobs}, dbguardian threads={args.zstd_threads} (0 = one per CPU)",
        f"# dbguardian {git_describe()}; transport {args.transport}; {args.runs} round(s), round-robin; "
        f"wait-idle {args.wait_idle:.0f}s",
    ]


# --------------------------------------------------------------------------------------------- main


def check_tools(args: argparse.Namespace) -> None:
    """GNU time, zstd, the server binaries and the dbguardian to measure must exist (also for cpu_guard.py)."""
    for needed in ("/usr/bin/time", shutil.which("zstd"), str(args.pgbin / "initdb"), str(args.dbguardian)):
        if not needed or not Path(needed).exists():
            raise SystemExit(f"missing: {needed or 'zstd'} (apt-get install time zstd postgresql-15)")


def plan_cluster(args: argparse.Namespace, cluster: Cluster) -> bool:
    """True when ``--reuse`` finds a running cluster loaded with the same data; checks the disk space either way."""
    params_file = args.workdir / "params.json"
    reuse = bool(
        args.reuse
        and params_file.exists()
        and json.loads(params_file.read_text()) == {"scale": args.scale, "random_mb": args.random_mb}
        and cluster.running()
    )
    check_disk(args.workdir, args.scale, args.random_mb, reuse)
    return reuse


def ready_cluster(args: argparse.Namespace, cluster: Cluster, reuse: bool) -> None:
    if reuse:
        log(f"reusing the running cluster in {args.workdir}")
    else:
        setup_cluster(cluster, args.scale, args.random_mb)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale (default 100, ~1.5 GB)")
    parser.add_argument("--random-mb", type=int, default=0, help="MB of random hex text to add (default 0)")
    parser.add_argument("--runs", type=int, default=3, help="rounds; every variant once per round (default 3)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running and the workdir in place")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse a running cluster in --workdir if it has the same scale/random-mb",
    )
    parser.add_argument("--cleanup", action="store_true", help="only stop and delete the cluster in --workdir")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=f"default {DEFAULT_WORKDIR}")
    parser.add_argument("--pgbin", type=Path, default=DEFAULT_PGBIN, help=f"default {DEFAULT_PGBIN}")
    parser.add_argument(
        "--dbguardian",
        type=Path,
        default=REPO / ".venv" / "bin" / "dbguardian",
        help="the dbguardian executable",
    )
    parser.add_argument(
        "--alt",
        action="append",
        default=[],
        metavar="LABEL=PYTHONPATH",
        help="also time 'python -P -m dbguardian' with this PYTHONPATH (a patched copy); repeatable",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="LABEL=COMMAND",
        help="also time this bash command (PG* variables set; may write to $BENCH_OUT, reported as size); repeatable",
    )
    parser.add_argument(
        "--transport",
        choices=["socket", "tcp"],
        default="socket",
        help="how every variant connects: unix socket (like anchors.sh) or 127.0.0.1",
    )
    parser.add_argument("--jobs", type=int, default=0, help="zstd -T for the pipeline (default: CPU count)")
    parser.add_argument(
        "--zstd-threads", type=int, default=0, help="dbguardian compression.threads (default 0 = one per CPU)"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=120,
        metavar="SECONDS",
        help="before each run, wait up to this long for other activity on the machine to stop (0 = don't)",
    )
    parser.add_argument(
        "--offsite",
        action="store_true",
        help=f"also time {OFFSITE} (local + S3 on moto's server, age) against {AGE_PIPE}",
    )
    parser.add_argument("--only", default=".", help="regex: run only the variants whose name matches")
    parser.add_argument("--save", type=Path, help="also write the table to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir = args.workdir.resolve()
    cluster = Cluster(args.workdir, args.pgbin)
    if args.cleanup:
        cluster.remove()
        return 0
    check_tools(args)
    jobs = args.jobs or os.cpu_count() or 1
    reuse = plan_cluster(args, cluster)
    offsite: Offsite | None = None
    try:
        ready_cluster(args, cluster, reuse)
        if args.offsite:
            offsite = Offsite.start(args.workdir)
        variants = build_variants(args, cluster, jobs, offsite)
        raw_bytes = raw_dump_bytes(cluster, args.transport)
        header = build_header(args, cluster, raw_bytes, jobs)
        samples: list[Sample] = []
        tsv = args.workdir / "results.tsv"
        tsv.write_text("variant\trun\tseconds\tmaxrss_kb\tcpu_s\tserver_cpu_s\tother_cpu_s\tbytes\tinner_s\n")
        for run_no in range(1, args.runs + 1):
            for variant in variants:
                sample = run_variant(variant, run_no, args.workdir, cluster, args.wait_idle)
                samples.append(sample)
                with tsv.open("a") as rows:
                    rows.write(
                        f"{sample.variant}\t{sample.run}\t{sample.seconds}\t{sample.maxrss_kb}\t"
                        f"{sample.cpu_seconds:.2f}\t{sample.server_cpu_seconds:.2f}\t"
                        f"{sample.other_cpu_seconds:.2f}\t{sample.size_bytes}\t{sample.inner_seconds or ''}\n"
                    )
        table = report(samples, header, variants)
        print("\n" + table, end="")
        (args.workdir / "results.txt").write_text(table)
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(table)
            shutil.copyfile(tsv, args.save.with_suffix(".tsv"))
        log(f"raw rows: {tsv}")
    finally:
        if offsite is not None:
            offsite.stop()
        if args.keep:
            log(
                f"--keep: cluster left in {args.workdir} (PGHOST={cluster.sock} PGPORT={cluster.port})"
                if (args.workdir / "port").exists()
                else "--keep: nothing to keep"
            )
        else:
            cluster.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
