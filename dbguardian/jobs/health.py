"""Gather the facts the health checks judge: catalog, storage probes, integrity, database, state."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dbguardian.archiving.status import WalStatus, wal_status
from dbguardian.catalog import PhysicalManifest, keys
from dbguardian.catalog.service import AnyBackup, Backup, Catalog, latest, newest_by_tier
from dbguardian.errors import BackupNotFound, DbguardianError
from dbguardian.health import BackupFact, TargetFacts, Verdict, evaluate
from dbguardian.jobs.outcome import JobContext, JobKind, JobOutcome
from dbguardian.logs import get_logger
from dbguardian.pipeline.read import stored_bytes
from dbguardian.policy import Policy
from dbguardian.policy.monitoring import IntegrityRules
from dbguardian.postgres import connected, connection_info
from dbguardian.schedule import JobSpec, catch_up_plan
from dbguardian.state import last_attempt, read_json, write_json
from dbguardian.storage import Storage, target_storages
from dbguardian.units import format_size

log = get_logger("dbguardian.health")


async def _probe(storage: Storage) -> None:
    """List, then write, read back and delete a small object."""
    key = keys.probe_key(socket.gethostname(), secrets.token_hex(4))
    payload = secrets.token_bytes(64)
    await storage.put_bytes(key, payload)
    try:
        if await storage.get_bytes(key) != payload:
            raise DbguardianError("the probe object read back differs from what was written")
    finally:
        await storage.delete(key)


def health_state_path(policy: Policy, target: str) -> Path:
    """The target's health state: consecutive database failures and integrity re-reads. One file per
    target, read once and written once per run (health runs of different targets never share a file)."""
    return policy.state_dir / "health" / f"{target}.json"


async def _database_failures(policy: Policy, target: str, state: dict[str, Any]) -> tuple[int, str | None]:
    """Try to connect; count consecutive failures in ``state``."""
    try:
        async with connected(connection_info(policy.targets[target])) as connection:
            await connection.fetchval("SELECT 1")
        failures, error = 0, None
    except DbguardianError as failure:
        failures, error = int(state.get("db_failures", 0)) + 1, str(failure)
    state.update({"db_failures": failures, "db_error": error})
    return failures, error


async def _reread(storage: Storage, record: AnyBackup) -> str | None:
    """Read the backup's objects back and check size and sha256; None if they match."""
    try:
        for stored in record.manifest.objects.values():
            async for _ in stored_bytes(storage, stored):
                pass
    except DbguardianError as error:
        return str(error)
    return None


async def _integrity(
    target: str,
    storages: Sequence[Storage],
    per_storage: dict[str, list[AnyBackup]],
    now: datetime,
    rules: IntegrityRules,
    state: dict[str, Any],
) -> tuple[dict[str, str], list[str]]:
    """Re-read the newest backup on each storage, within the policy's budget (``health.integrity``).

    A backup is re-read at most once per ``every``; one larger than ``max_bytes`` (the most one health
    run reads per storage) is not read here at all — the verify job checks it — and that is logged
    once per backup and storage. Returns the problems per storage and what was checked.
    """
    verified: dict[str, str] = dict(state.get("integrity_verified", {}))  # "storage:backup id" -> when
    told_too_big = set(state.get("integrity_too_big", []))
    too_big: list[str] = []
    errors: dict[str, str] = {}
    checked: list[str] = []
    for storage in storages:
        storage_name = storage.name
        try:
            newest = latest(per_storage.get(storage_name, []), target)
        except BackupNotFound:
            continue
        key = f"{storage_name}:{newest.id}"
        size = sum(stored.size_bytes for stored in newest.manifest.objects.values())
        if size > rules.max_bytes:
            too_big.append(key)
            if key not in told_too_big:
                log.warning("integrity re-read skipped: the backup is larger than health.integrity.max_bytes; "
                            "the verify job checks it", target=target, storage=storage_name, id=newest.id,
                            size=format_size(size), max_bytes=format_size(rules.max_bytes))  # fmt: skip
            continue
        checked.append(f"{storage_name}:{newest.id}")
        last = verified.get(key)
        if last is not None and now - datetime.fromisoformat(last) < rules.every:
            continue
        problem = await _reread(storage, newest)
        if problem is None:
            verified[key] = now.isoformat()
        else:
            errors[storage_name] = problem
    # Only entries still within ``every`` matter; older ones (and deleted backups) drop out.
    state["integrity_verified"] = {k: v for k, v in verified.items() if now - datetime.fromisoformat(v) < rules.every}
    state["integrity_too_big"] = sorted(too_big)
    return errors, checked


async def gather(
    policy: Policy,
    target_name: str,
    now: datetime,
    specs: Sequence[JobSpec],
    *,
    running: bool = False,
    storages: Sequence[Storage] | None = None,
) -> TargetFacts:
    """``specs``: the job table, against which missed runs are judged; ``storages``: the target's (opened
    from the policy unless given)."""
    if storages is None:
        storages = target_storages(policy, target_name)
    storage_errors: dict[str, str] = {}
    records: dict[str, AnyBackup] = {}
    per_storage: dict[str, list[AnyBackup]] = {}
    for storage in storages:
        try:
            found = await Catalog([storage]).backups(target_name)
            await _probe(storage)
        except DbguardianError as error:
            storage_errors[storage.name] = str(error)
            continue
        per_storage[storage.name] = found
        for record in found:
            merged = records.setdefault(record.id, Backup(record.manifest))
            merged.storages.append(storage.name)

    state_path = health_state_path(policy, target_name)
    state: dict[str, Any] = read_json(state_path) or {}
    rules = policy.health_rules(target_name).integrity
    integrity_errors, checked = await _integrity(target_name, storages, per_storage, now, rules, state)
    db_failures, db_error = await _database_failures(policy, target_name, state)
    write_json(state_path, state)

    specs = [spec for spec in specs if spec.target == target_name]
    missed = [] if running else [
        f"{item.spec.id} {item.reason}"
        for item in catch_up_plan(specs, newest_by_tier(records.values()), now - policy.misfire_grace_time)
        if item.missed_fire_time is not None
    ]  # fmt: skip

    backups = [
        BackupFact(r.id, r.manifest.tier, r.manifest.started_at, r.manifest.size_bytes, tuple(r.storages), r.manifest.kind,
                   incremental=isinstance(r.manifest, PhysicalManifest) and r.manifest.incremental_of is not None)
        for r in records.values()
    ]  # fmt: skip
    return TargetFacts(
        backups=backups,
        storages=[storage.name for storage in storages],
        storage_errors=storage_errors,
        integrity_errors=integrity_errors,
        integrity_checked=checked,
        db_consecutive_failures=db_failures,
        db_error=db_error,
        last_attempt=last_attempt(policy.state_dir, target_name),
        missed=missed,
    )


async def check_target(
    policy: Policy, target_name: str, now: datetime, specs: Sequence[JobSpec], *, running: bool = False
) -> tuple[list[Verdict], TargetFacts]:
    """The backup checks, and for a target with ``wal:`` the WAL archive checks after them."""
    verdicts, facts, _ = await check_target_with_wal(policy, target_name, now, specs, running=running)
    return verdicts, facts


async def check_target_with_wal(
    policy: Policy, target_name: str, now: datetime, specs: Sequence[JobSpec], *, running: bool = False
) -> tuple[list[Verdict], TargetFacts, WalStatus | None]:
    facts = await gather(policy, target_name, now, specs, running=running)
    verdicts = evaluate(target_name, facts, policy.health_rules(target_name), now)
    wal = None
    if policy.target(target_name).wal is not None:
        wal = await wal_status(policy, target_name, now)
        verdicts += wal.verdicts
    return verdicts, facts, wal


def specs(policy: Policy) -> list[JobSpec]:
    rules = {name: policy.health_rules(name) for name in policy.targets}
    return [JobSpec("health", name, "-", rule.cron, rule.every, policy.timezone) for name, rule in rules.items()]


async def run(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """The health checks of one target: verdicts for the alert state machines, gauges for Prometheus."""
    now = ctx.clock()
    verdicts, facts, wal = await check_target_with_wal(
        ctx.policy, spec.target, now, ctx.specs, running=ctx.target_busy(spec.target)
    )
    outcome = JobOutcome(result="success" if all(v.ok for v in verdicts) else "failure", verdicts=verdicts)
    for verdict in verdicts:
        outcome.observe("health_ok", spec.target, verdict.check, value=1 if verdict.ok else 0)
        if not verdict.ok:
            log.warning("health check failing", target=spec.target, check=verdict.check, observed=verdict.observed)
    newest: dict[tuple[str, str], datetime] = {}
    for backup in facts.backups:
        for storage in backup.storages:
            key = (backup.tier, storage)
            newest[key] = max(newest.get(key, backup.started_at), backup.started_at)
    for (tier, storage), moment in newest.items():
        outcome.observe("backup_age", spec.target, tier, storage, value=(now - moment).total_seconds())
    if wal is not None:
        observe_wal(outcome, spec.target, wal)
    outcome.observe("health_last_run", value=now.timestamp())
    return outcome


def observe_wal(outcome: JobOutcome, target: str, wal: WalStatus) -> None:
    """The archive's gauges: newest segment per storage, the spool, the recovery point."""
    for storage, moment in wal.archived_at.items():
        outcome.observe("wal_last_archived", target, storage, value=moment.timestamp())
    outcome.observe("wal_spool_segments", target, value=wal.facts.spool.files)
    outcome.observe("wal_spool_bytes", target, value=wal.facts.spool.bytes)
    if wal.rpo is not None:
        outcome.observe("rpo", target, value=wal.rpo.total_seconds())


KIND = JobKind("health", "scheduled", specs, run, coalesce=True)
