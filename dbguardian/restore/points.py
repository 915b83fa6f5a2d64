"""Named restore points (``pg_create_restore_point``) made durable at once: the WAL is switched so the
segment holding the point is archived now, and with ``wait`` shipped to every storage before returning
("before the migration" must be restorable the moment the command says so)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import asyncpg

from dbguardian.archiving.ship import ship_spool
from dbguardian.catalog.archive import find_wal
from dbguardian.errors import DatabaseError, OperationError, UsageError
from dbguardian.logs import get_logger
from dbguardian.policy import Policy
from dbguardian.postgres import connected, connection_info
from dbguardian.restore.physical import check_point_name
from dbguardian.storage import target_storages

log = get_logger("dbguardian.restore.points")


@dataclass(frozen=True)
class RestorePoint:
    name: str
    lsn: str
    created_at: str
    segment: str
    archived: bool = False
    """True when the segment is on every storage of the target (``wait``)."""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


GRANT_HINT = "GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO {role}"


async def create_restore_point(
    policy: Policy, target_name: str, name: str, *, wait: bool, timeout: float | None = None
) -> RestorePoint:
    """``pg_create_restore_point(name)`` then ``pg_switch_wal()``; with ``wait`` until the segment holding
    the point is on every storage of the target (shipping the spool itself, so no daemon is needed)."""
    check_point_name(name)
    target = policy.target(target_name)
    if wait and target.wal is None:
        raise UsageError(f"target {target_name!r} has no wal: block; --wait has no archive to wait for")
    info = connection_info(target)
    async with connected(info) as connection:
        try:
            async with connection.transaction():
                row = await connection.fetchrow(
                    "SELECT lsn::text AS lsn, pg_walfile_name(lsn) AS segment FROM pg_create_restore_point($1) AS lsn", name
                )
                assert row is not None
                lsn, segment = row["lsn"], row["segment"]
            await connection.fetchval("SELECT pg_switch_wal()")
        except asyncpg.InsufficientPrivilegeError:
            role = info.libpq_env().get("PGUSER", "the backup role")
            raise DatabaseError(
                f"{info.describe()}: permission denied for restore points; as a superuser: {GRANT_HINT.format(role=role)}"
            ) from None
        except asyncpg.PostgresError as error:
            raise DatabaseError(f"{info.describe()}: cannot create restore point {name!r}: {error}") from None
    created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    point = RestorePoint(name=name, lsn=str(lsn), created_at=created, segment=str(segment))
    log.info("restore point created", target=target_name, name=name, lsn=point.lsn, segment=point.segment)
    if not wait:
        return point
    assert target.wal is not None
    limit = timeout if timeout is not None else target.wal.wait_for_wal.total_seconds()
    await wait_archived(policy, target_name, point.segment, limit)
    return RestorePoint(**{**asdict(point), "archived": True})


async def wait_archived(policy: Policy, target_name: str, segment: str, timeout: float) -> None:
    """Until ``segment`` is on every storage of the target: ships the spool up to it on each round."""
    deadline = time.monotonic() + timeout
    storages = target_storages(policy, target_name)
    last_failures: dict[str, str] = {}
    while True:
        present = await asyncio.gather(*(find_wal(storage, target_name, segment) for storage in storages))
        if all(item is not None for item in present):
            return
        report = await ship_spool(policy, target_name, until=segment)
        last_failures = report.failures or last_failures
        if time.monotonic() > deadline:
            missing = [s.name for s, item in zip(storages, present, strict=True) if item is None]
            why = "; ".join(f"{name}: {error}" for name, error in last_failures.items()) or "not in the spool yet"
            raise OperationError(f"WAL segment {segment} is not on {', '.join(missing)} after {timeout:.0f}s ({why})")
        await asyncio.sleep(0.3)
