"""Restoring backups: logical (pg_dump archive → staging database → verify → rename) and validate-only.

``logical`` holds the restore itself, ``validate`` the read-only check, ``pg_restore`` the one
pg_restore call (shared with drills), ``verify`` the one comparison of restored counts against the
manifest (shared with drills), ``locate`` finding a backup and how to read it; ``physical`` the
point-in-time recovery (base backup + WAL replay into a data directory) and ``points`` named restore points.
"""

from __future__ import annotations

from dbguardian.restore.locate import Located, locate, read_options, server_major_of
from dbguardian.restore.logical import RestoreReport, SafetyBackup, restore, staging_name
from dbguardian.restore.physical import (
    PitrPlan,
    PitrReport,
    RecoveryTarget,
    finish_pitr,
    make_target,
    prepare_pitr,
    start_and_wait,
)
from dbguardian.restore.validate import ValidateReport, validate

__all__ = [
    "Located",
    "PitrPlan",
    "PitrReport",
    "RecoveryTarget",
    "RestoreReport",
    "SafetyBackup",
    "ValidateReport",
    "finish_pitr",
    "locate",
    "make_target",
    "prepare_pitr",
    "read_options",
    "restore",
    "server_major_of",
    "staging_name",
    "start_and_wait",
    "validate",
]
