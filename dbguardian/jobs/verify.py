"""Verify: re-read stored objects and compare size and sha256 with the manifest, without restoring."""

from __future__ import annotations

from dataclasses import dataclass

from dbguardian.catalog.service import AnyBackup, Catalog, select
from dbguardian.errors import BackupNotFound, DbguardianError, UsageError
from dbguardian.health import Verdict
from dbguardian.jobs.outcome import JobContext, JobKind, JobOutcome
from dbguardian.logs import get_logger
from dbguardian.pipeline.read import stored_bytes
from dbguardian.policy import Policy
from dbguardian.schedule import JobSpec
from dbguardian.storage import target_storages

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
    results: list[ObjectCheck] = []
    found_any = False
    for storage in target_storages(policy, target_name):
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


def specs(policy: Policy) -> list[JobSpec]:
    return [
        JobSpec("verify", name, "-", target.verify.cron, target.verify.every, policy.timezone)
        for name, target in policy.targets.items()
        if target.verify is not None
    ]


async def run(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    """A scheduled verify: the latest backup (or every one, with ``verify.all``) re-read on every storage."""
    config = ctx.policy.targets[spec.target].verify
    expected = "stored objects match their manifests"
    outcome = JobOutcome()
    try:
        results = await verify(ctx.policy, spec.target, every=bool(config and config.all))
    except DbguardianError as error:
        outcome.result = "failure"
        outcome.observe("verify_last_result", spec.target, value=0)
        outcome.verdicts.append(Verdict(spec.target, "verify", False, str(error), expected))
        return outcome
    failed = [f"{r.storage}:{r.key}: {r.error}" for r in results if not r.ok]
    outcome.result = "failure" if failed else "success"
    outcome.observe("verify_last_result", spec.target, value=0 if failed else 1)
    observed = "; ".join(failed) or f"{len(results)} object(s) match their manifests"
    outcome.verdicts.append(Verdict(spec.target, "verify", not failed, observed, expected))
    return outcome


KIND = JobKind("verify", "scheduled", specs, run, exclusive=True)
