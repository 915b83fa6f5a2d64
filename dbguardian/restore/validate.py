"""Validate-only: read, checksum, decrypt, decompress and ``pg_restore --list`` a backup, touching no database."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from dbguardian.logs import get_logger
from dbguardian.pipeline.encrypt import IDENTITY_ENV
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.read import feed_program, read_verified, stored_bytes
from dbguardian.policy import Policy
from dbguardian.progress import Progress
from dbguardian.restore.locate import locate, pg_restore_for, read_options

log = get_logger("dbguardian.restore")


@dataclass
class ValidateReport:
    backup_id: str
    target: str
    storage: str
    stored_bytes: int
    raw_bytes: int
    toc_entries: int | None
    """Entries of the archive's table of contents; None when encrypted and no identity was given."""
    seconds: float
    toc: list[str] = field(default_factory=list)


async def validate(
    policy: Policy,
    target_name: str,
    reference: str,
    from_storage: str | None = None,
    identity: Path | None = None,
    *,
    before: datetime | None = None,
) -> ValidateReport:
    """Read, checksum, decrypt, decompress and ``pg_restore --list`` a backup, touching no database.

    An encrypted backup without an identity (``--identity`` or the environment) is checked as far
    as possible without the key: every stored byte is read and its sha256 compared.
    """
    started = time.monotonic()
    located = await locate(policy, target_name, reference, from_storage, before=before)
    manifest = located.record.manifest
    stored = manifest.objects["dump"]
    progress = Progress(f"validate {manifest.id}", stored.size_bytes)
    toc: list[str] | None = None
    if manifest.encryption is not None and identity is None and not os.environ.get(IDENTITY_ENV):
        for item in manifest.objects.values():
            async for _ in stored_bytes(located.storage, item, progress if item is stored else None):
                pass
    else:
        pg_restore = await pg_restore_for(manifest, policy.pg_bin_dirs)
        async with Child([pg_restore.path, "--list"], stdin=True) as child:
            listing: list[bytes] = []

            async def collect() -> None:
                # Joined before splitting: a chunk may end in the middle of a line.
                listing.extend([chunk async for chunk in child.stdout_chunks()])

            dump_stream = read_verified(located.storage, stored, **read_options(manifest, identity), progress=progress)
            await asyncio.gather(feed_program(child, dump_stream), collect())
            await child.wait_checked()
        if "globals" in manifest.objects:
            async for _ in read_verified(located.storage, manifest.objects["globals"], **read_options(manifest, identity)):
                pass
        lines = b"".join(listing).decode(errors="replace").splitlines()
        toc = [line for line in lines if line and not line.startswith(";")]
    progress.finish()
    report = ValidateReport(
        backup_id=manifest.id,
        target=target_name,
        storage=located.storage.name,
        stored_bytes=stored.size_bytes,
        raw_bytes=stored.raw_size_bytes,
        toc_entries=None if toc is None else len(toc),
        seconds=round(time.monotonic() - started, 3),
        toc=toc or [],
    )
    log.info("backup validated", target=target_name, id=manifest.id, storage=located.storage.name,
             toc_entries=report.toc_entries, contents_checked=toc is not None)  # fmt: skip
    return report
