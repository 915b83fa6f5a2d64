"""Gather the facts the health checks judge: catalog, storage probes, integrity, database, state."""

from __future__ import annotations

import secrets
import socket
from datetime import datetime, timedelta

from dbguardian.catalog import BackupRecord, list_backups
from dbguardian.errors import DbguardianError
from dbguardian.health import BackupFact, TargetFacts, Verdict, evaluate
from dbguardian.jobs.backup import target_config, target_storages
from dbguardian.logs import get_logger
from dbguardian.pipeline.read import stored_bytes
from dbguardian.policy import Policy
from dbguardian.postgres import connected, connection_info
from dbguardian.schedule import catch_up_plan, job_specs
from dbguardian.state import last_attempt, read_json, write_json
from dbguardian.storage import Storage

log = get_logger("dbguardian.health")

INTEGRITY_RECHECK = timedelta(hours=24)


async def _probe(storage: Storage) -> None:
    """List, then write, read back and delete a small object."""
    key = f"_dbguardian/probe/{socket.gethostname()}-{secrets.token_hex(4)}"
    payload = secrets.token_bytes(64)
    await storage.put_bytes(key, payload)
    try:
        if await storage.get_bytes(key) != payload:
            raise DbguardianError("the probe object read back differs from what was written")
    finally:
        await storage.delete(key)


async def _database_failures(policy: Policy, target: str) -> tuple[int, str | None]:
    """Try to connect; keep the count of consecutive failures in state_dir."""
    path = policy.state_dir / "health" / f"{target}.json"
    state = read_json(path) or {}
    try:
        async with connected(connection_info(policy.targets[target])) as connection:
            await connection.fetchval("SELECT 1")
        failures, error = 0, None
    except DbguardianError as failure:
        failures, error = int(state.get("db_failures", 0)) + 1, str(failure)
    state.update({"db_failures": failures, "db_error": error})
    write_json(path, state)
    return failures, error


async def _integrity(
    policy: Policy, storage: Storage, record: BackupRecord, now: datetime, verified: dict[str, str]
) -> str | None:
    """Re-read the newest backup's objects on one storage (once a day per backup); None if they match."""
    key = f"{storage.name}:{record.id}"
    last = verified.get(key)
    if last is not None and now - datetime.fromisoformat(last) < INTEGRITY_RECHECK:
        return None
    try:
        for stored in record.manifest.objects.values():
            async for _ in stored_bytes(storage, stored):
                pass
    except DbguardianError as error:
        return str(error)
    verified[key] = now.isoformat()
    return None


async def gather(policy: Policy, target_name: str, now: datetime, *, running: bool = False) -> TargetFacts:
    target = target_config(policy, target_name)
    storages = target_storages(policy, target)
    storage_errors: dict[str, str] = {}
    records: dict[str, BackupRecord] = {}
    per_storage: dict[str, list[BackupRecord]] = {}
    for storage in storages:
        try:
            found = await list_backups([storage], target_name)
            await _probe(storage)
        except DbguardianError as error:
            storage_errors[storage.name] = str(error)
            continue
        per_storage[storage.name] = found
        for record in found:
            merged = records.setdefault(record.id, BackupRecord(record.manifest))
            merged.storages.append(storage.name)

    verified_path = policy.state_dir / "health" / "verified.json"
    verified: dict[str, str] = read_json(verified_path) or {}
    integrity_errors: dict[str, str] = {}
    checked: list[str] = []
    for storage in storages:
        regular = [r for r in per_storage.get(storage.name, []) if r.manifest.tier != "safety"]
        if not regular:
            continue
        newest = regular[0]  # list_backups sorts newest first
        checked.append(f"{storage.name}:{newest.id}")
        problem = await _integrity(policy, storage, newest, now, verified)
        if problem is not None:
            integrity_errors[storage.name] = problem
    write_json(verified_path, {k: v for k, v in verified.items() if now - datetime.fromisoformat(v) < INTEGRITY_RECHECK})

    db_failures, db_error = await _database_failures(policy, target_name)

    newest_by_tier: dict[tuple[str, str], datetime] = {}
    for record in records.values():
        tier_key = (target_name, record.manifest.tier)
        newest_by_tier[tier_key] = max(newest_by_tier.get(tier_key, record.manifest.started_at), record.manifest.started_at)
    specs = [spec for spec in job_specs(policy) if spec.target == target_name]
    missed = [] if running else [
        f"{item.spec.id} {item.reason}"
        for item in catch_up_plan(specs, newest_by_tier, now - policy.misfire_grace_time)
        if item.missed_fire_time is not None
    ]  # fmt: skip

    backups = [
        BackupFact(r.id, r.manifest.tier, r.manifest.started_at, r.manifest.size_bytes, tuple(r.storages))
        for r in records.values()
    ]
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
    policy: Policy, target_name: str, now: datetime, *, running: bool = False
) -> tuple[list[Verdict], TargetFacts]:
    facts = await gather(policy, target_name, now, running=running)
    return evaluate(target_name, facts, policy.health_rules(target_name), now), facts
