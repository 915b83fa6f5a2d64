"""Verify: re-read stored objects and compare size and sha256 with the manifest, without restoring."""

from __future__ import annotations

from dataclasses import dataclass

from dbguardian.catalog.service import AnyBackup, Catalog, select
from dbguardian.errors import BackupNotFound, DbguardianError, UsageError
from dbguardian.jobs.backup import target_config, target_storages
from dbguardian.logs import get_logger
from dbguardian.pipeline.read import stored_bytes
from dbguardian.policy import Policy

log = get_logger("dbguardian.verify")


@dataclass(frozen=True)
class ObjectCheck:
    backup_id: str
    storage: str
    key: str
    size_bytes: int
    ok: bool
    error: str | None


async def verify(policy: Policy, target_name: str, reference: str = "latest", *, every: bool = False) -> list[ObjectCheck]:
    """Check the chosen backup (``latest``, an id) or ``every`` backup of the target, on every storage holding it."""
    target = target_config(policy, target_name)
    results: list[ObjectCheck] = []
    found_any = False
    for storage in target_storages(policy, target):
        try:
            records = await Catalog([storage]).backups(target_name, strict=True)
        except DbguardianError as error:
            results.append(ObjectCheck("-", storage.name, "-", 0, False, f"cannot list: {error}"))
            continue
        if not every:
            records = _chosen(records, target_name, reference)
        for record in records:
            found_any = True
            for stored in record.manifest.objects.values():
                try:
                    async for _ in stored_bytes(storage, stored):
                        pass
                except DbguardianError as error:
                    results.append(ObjectCheck(record.id, storage.name, stored.key, stored.size_bytes, False, str(error)))
                    log.error("verify failed", storage=storage.name, key=stored.key, error=str(error))
                else:
                    results.append(ObjectCheck(record.id, storage.name, stored.key, stored.size_bytes, True, None))
    if not found_any and not any(not r.ok for r in results):
        what = "backups" if every else f"backup {reference!r}"
        raise UsageError(f"target {target_name!r} has no {what} to verify")
    return results


def _chosen(records: list[AnyBackup], target: str, reference: str) -> list[AnyBackup]:
    """The backup ``reference`` names on one storage (``latest``: that storage's newest non-safety one)."""
    try:
        return [select(records, target, reference)]
    except BackupNotFound:
        return []
