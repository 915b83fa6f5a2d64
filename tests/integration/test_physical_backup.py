"""Base backups (``backup --physical`` / a physical tier) of a real PostgreSQL 15 archiving into its spool:
what is stored, the WAL it waits for, failures that leave nothing, and the backup actually starting."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from dbguardian.backup.basetar import BackupPosition, needed_wal
from dbguardian.catalog.archive import list_wal
from dbguardian.catalog.manifest import PhysicalManifest, parse_manifest
from dbguardian.catalog.wal import parse_lsn
from dbguardian.jobs import backup as backup_job
from dbguardian.jobs.outcome import JobContext
from dbguardian.policy import load_policy
from dbguardian.storage import LocalStorage
from dbguardian.throwaway import ThrowawayCluster, free_port, short_tempdir
from tests.conftest import PolicyFactory, backup_dir, cli_env, run_cli
from tests.support.majors import lane_bin, lane_major, lane_server_bin
from tests.support.walcluster import WalCluster

SEGMENT = 16 * 1024 * 1024


def physical_backup(policy: Path, *args: str) -> str:
    result = run_cli(policy, "backup", "app", *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.strip().splitlines()[-1]


def manifest_of(policy: Path, backup_id: str) -> PhysicalManifest:
    manifest = parse_manifest((backup_dir(policy) / "app" / backup_id / "manifest.json").read_bytes())
    assert isinstance(manifest, PhysicalManifest)
    return manifest


def position(manifest: PhysicalManifest) -> BackupPosition:
    return BackupPosition(manifest.timeline, parse_lsn(manifest.start_lsn), parse_lsn(manifest.stop_lsn))


def decoded(path: Path, identity: Path | None = None) -> bytes:
    data = path.read_bytes()
    if identity is not None:
        data = subprocess.run(["age", "-d", "-i", str(identity)], input=data, capture_output=True, check=True).stdout
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def stored_wal(root: Path) -> list[str]:
    return [item.name for item in asyncio.run(list_wal(LocalStorage("local", root), "app"))]


COUNTS_QUERY_SQL = (
    "SELECT string_agg(format('SELECT %s AS i, %L AS name, count(*) AS n FROM %I.%I', i, relname, nspname, relname), "
    "' UNION ALL ') FROM (SELECT row_number() OVER (ORDER BY n.nspname, c.relname) AS i, n.nspname, c.relname "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')) t"
)


def table_counts(psql: Callable[[str, str], str]) -> str:
    """``table=rows`` of every user table, in order (two queries: some servers lack the XML functions a
    single query would need)."""
    union = psql(COUNTS_QUERY_SQL, "app")
    return psql(f"SELECT string_agg(name || '=' || n, ',' ORDER BY i) FROM ({union}) s", "app")


def extract(tar_bytes: bytes) -> Path:
    """The base backup as a data directory, checked file by file against its own backup_manifest."""
    base = short_tempdir("dbgpr-")
    data = base / "data"
    data.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as archive:
        archive.extractall(data, filter="tar")
    verify = subprocess.run(
        [lane_bin("pg_verifybackup"), "--no-parse-wal", str(data)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr + verify.stdout
    return data


def start_restored(data: Path, wal: dict[str, bytes], owner_of: Path) -> ThrowawayCluster:
    """Put the backup's WAL into pg_wal and start it on a port of its own, archiving off (crash recovery
    from backup_label replays it)."""
    base = data.parent
    for name, content in wal.items():
        (data / "pg_wal" / name).write_bytes(content)
    port = free_port()
    conf = data / "postgresql.conf"
    lines = [line for line in conf.read_text().splitlines() if not line.startswith(("port =", "unix_socket_directories ="))]
    lines += [f"port = {port}", f"unix_socket_directories = '{base / 'sock'}'", "archive_mode = off"]
    conf.write_text("\n".join(lines) + "\n")
    owner = owner_of.stat()
    for root, dirs, files in os.walk(base):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, owner.st_uid, owner.st_gid)
    data.chmod(0o700)
    os_user = pwd.getpwuid(owner.st_uid).pw_name if os.geteuid() == 0 else None
    return ThrowawayCluster(base, port=port, os_user=os_user, bin_dir=lane_server_bin()).start()


def test_physical_backup_streams_the_cluster_waits_for_its_wal_and_starts_again(
    wal_cluster: WalCluster, tmp_path: Path
) -> None:
    policy = wal_cluster.policy(tmp_path)
    before = table_counts(wal_cluster.psql)
    assert before.count("=") >= 3, before
    backup_id = physical_backup(policy, "--physical")

    manifest = manifest_of(policy, backup_id)
    assert (manifest.kind, manifest.tier, manifest.timeline, manifest.pg_version) == ("physical", "manual", 1, lane_major())
    assert parse_lsn(manifest.start_lsn) < parse_lsn(manifest.stop_lsn)
    assert manifest.system_identifier == wal_cluster.psql("SELECT system_identifier FROM pg_control_system()")
    assert manifest.database == "app" and manifest.storage == ["local"]
    assert manifest.started_at <= manifest.finished_at
    base = manifest.objects["base"]
    assert base.key == f"app/{backup_id}/base.tar.zst"
    stored = backup_dir(policy) / base.key
    assert stored.stat().st_size == base.size_bytes == manifest.size_bytes
    tar_bytes = decoded(stored)
    assert len(tar_bytes) == base.raw_size_bytes
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as archive:
        names = set(archive.getnames())
        label = archive.extractfile("backup_label")
        assert label is not None and f"LABEL: dbguardian {backup_id}" in label.read().decode()
    assert {"PG_VERSION", "global/pg_control", "backup_label", "backup_manifest"} <= names
    assert not any(name.startswith("pg_wal/0") for name in names)  # -X none: the WAL comes from the archive

    # Committed only with its WAL on the storage: every segment from start to stop and the .backup label.
    needed = needed_wal(position(manifest), SEGMENT)
    assert needed[-1].endswith(".backup")
    assert set(needed) <= set(stored_wal(backup_dir(policy)))

    listing = run_cli(policy, "list", "--json")
    [entry] = json.loads(listing.stdout)
    assert (entry["id"], entry["kind"], entry["tier"]) == (backup_id, "physical", "manual")
    assert (entry["start_lsn"], entry["stop_lsn"], entry["timeline"]) == (manifest.start_lsn, manifest.stop_lsn, 1)
    assert entry["sha256"] == base.sha256 and entry["storage"] == ["local"]
    table = run_cli(policy, "list", "app")
    assert "KIND" in table.stdout.splitlines()[0] and "physical" in table.stdout
    attempt = json.loads((tmp_path / "state" / "targets" / "app.json").read_text())
    assert attempt["last_attempt"]["result"] == "success"

    # The proof: the tar plus the archived WAL start as a cluster holding the source's rows.
    wal = {
        name: decoded(backup_dir(policy) / "app" / "wal" / "00000001" / f"{name}.zst")
        for name in needed
        if not name.endswith(".backup")
    }
    data = extract(tar_bytes)
    restored = start_restored(data, wal, wal_cluster.spool)
    try:
        assert table_counts(restored.psql) == before
    finally:
        restored.stop()
        shutil.rmtree(restored.base, ignore_errors=True)


def backup_objects(policy: Path) -> list[str]:
    root = backup_dir(policy) / "app"
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file() and "wal" not in path.parts)


def test_a_server_without_archiving_is_refused_with_the_fix_and_leaves_nothing(
    database: str, make_policy: PolicyFactory, tmp_path: Path
) -> None:
    # The session cluster archives nothing and its backup role may not replicate: both are reported.
    policy = make_policy(database, wal={"spool": str(tmp_path / "spool")})
    result = run_cli(policy, "backup", "app", "--physical")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "archive_mode is off: run `dbguardian wal setup app`" in error
    assert "may not take base backups" in error and "Traceback" not in result.stderr
    assert backup_objects(policy) == []
    attempt = json.loads((tmp_path / "state" / "targets" / "app.json").read_text())["last_attempt"]
    assert attempt["result"] == "failure" and "archive_mode is off" in attempt["error"]


def test_physical_needs_wal_and_a_physical_or_manual_tier(database: str, make_policy: PolicyFactory) -> None:
    no_wal = make_policy(database)
    result = run_cli(no_wal, "backup", "app", "--physical")
    assert result.returncode == 2 and "has no 'wal:' block" in result.stderr
    logical_tier = run_cli(no_wal, "backup", "app", "--physical", "--tier", "daily")
    assert logical_tier.returncode == 2 and "tier 'daily' of 'app' takes logical backups" in logical_tier.stderr


def test_wal_that_never_reaches_the_storage_fails_the_backup_and_discards_it(
    wal_cluster: WalCluster, tmp_path: Path
) -> None:
    # The policy's spool is not where the server archives: no shipper can move the backup's WAL.
    elsewhere = tmp_path / "other-spool"
    elsewhere.mkdir()
    policy = wal_cluster.policy(
        tmp_path, wal={"spool": str(elsewhere), "wait_for_wal": "3s", "compression": {"algorithm": "zstd"}}
    )
    started = time.monotonic()
    result = run_cli(policy, "backup", "app", "--physical")
    assert result.returncode == 1, result.stdout
    assert time.monotonic() - started < 60
    error = result.stderr.strip().splitlines()[-1]
    assert "not archived within 3s: is archiving working? see `dbguardian wal status`" in error
    assert "WAL up to 0000000100000000000000" in error
    assert backup_objects(policy) == []
    assert json.loads(run_cli(policy, "list", "--json").stdout) == []


def test_an_interrupted_backup_leaves_nothing(wal_cluster: WalCluster, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-spool"
    elsewhere.mkdir()
    policy = wal_cluster.policy(tmp_path, wal={"spool": str(elsewhere), "wait_for_wal": "2m"})
    argv = [sys.executable, "-m", "dbguardian", "--log-format", "json", "--policy", str(policy)]
    process = subprocess.Popen(
        [*argv, "backup", "app", "--physical"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=cli_env()
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # the tar is committed on the storage, the manifest waits for WAL
        seen.append(line)
        if "waiting for its WAL" in line:
            break
    assert any("waiting for its WAL" in line for line in seen), seen
    assert any(name.startswith(tuple("0123456789")) and "base.tar" in name for name in backup_objects(policy))
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 1
    assert "interrupted by SIGTERM" in rest
    assert backup_objects(policy) == []


def test_encrypted_base_backup_of_a_physical_tier(wal_cluster: WalCluster, tmp_path: Path) -> None:
    identity = tmp_path / "identity.txt"
    keygen = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
    recipient = keygen.stderr.strip().split("Public key: ")[1]
    policy = wal_cluster.policy(tmp_path, encryption={"method": "age", "recipients": [recipient]})
    backup_id = physical_backup(policy, "--tier", "base")
    manifest = manifest_of(policy, backup_id)
    assert (manifest.kind, manifest.tier) == ("physical", "base")
    assert manifest.encryption is not None and manifest.encryption.recipients == [recipient]
    stored = backup_dir(policy) / manifest.objects["base"].key
    assert stored.name == "base.tar.zst.age" and stored.read_bytes().startswith(b"age-encryption.org/v1")
    with tarfile.open(fileobj=io.BytesIO(decoded(stored, identity))) as archive:
        assert {"PG_VERSION", "global/pg_control"} <= set(archive.getnames())
    wal_root = backup_dir(policy) / "app" / "wal" / "00000001"
    for name in needed_wal(position(manifest), SEGMENT):
        assert (wal_root / f"{name}.zst.age").exists(), sorted(path.name for path in wal_root.iterdir())


def test_the_scheduled_job_of_a_physical_tier_takes_a_base_backup(wal_cluster: WalCluster, tmp_path: Path) -> None:
    policy = load_policy(wal_cluster.policy(tmp_path))
    spec = next(spec for spec in backup_job.specs(policy) if spec.tier == "base")
    ctx = JobContext(policy, lambda: datetime.now(UTC), [spec], lambda target: False, asyncio.Event(), lambda _: None)
    outcome = asyncio.run(backup_job.run(ctx, spec))
    assert outcome.result == "success" and outcome.follow_ups == ["prune", "health"]
    metrics = {(item.metric, item.labels) for item in outcome.observations}
    assert ("last_success", ("app", "base")) in metrics and ("runs", ("app", "base", "success")) in metrics
    [entry] = json.loads(run_cli(wal_cluster.policy(tmp_path), "list", "--json").stdout)
    assert (entry["kind"], entry["tier"]) == ("physical", "base")
