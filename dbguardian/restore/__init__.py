"""Restoring backups: logical (pg_dump archive → staging database → verify → rename) and validate-only.

``logical`` holds the restore itself, ``validate`` the read-only check, ``pg_restore`` the one
pg_restore call (shared with drills), ``verify`` the one comparison of restored counts against the
manifest (shared with drills), ``locate`` finding a backup and how to read it. A ``physical`` module
(base backup + WAL replay) will sit beside ``logical``.
"""

from __future__ import annotations

from dbguardian.restore.locate import Located, locate, read_options, server_major_of
from dbguardian.restore.logical import RestoreReport, SafetyBackup, restore, staging_name
from dbguardian.restore.validate import ValidateReport, validate

__all__ = [
    "Located",
    "RestoreReport",
    "SafetyBackup",
    "ValidateReport",
    "locate",
    "read_options",
    "restore",
    "server_major_of",
    "staging_name",
    "validate",
]
