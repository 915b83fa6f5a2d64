"""Every error dbguardian raises on purpose.

    DbguardianError
    ├── PolicyError            the policy file is missing or invalid (exit 2)
    ├── UsageError             the command line asks for something impossible (exit 2)
    └── OperationError         an operation ran and failed (exit 1)
        ├── DatabaseError      PostgreSQL unreachable, authentication, SQL failure
        ├── ToolError          a pg_* program is missing, too old, or failed
        ├── PipelineError      a stream stage failed (corrupt compressed data, ...)
        ├── SecretUnavailable  a secret's file (password_file, url_file, ...) cannot be read
        ├── StorageError       a storage backend failed
        │   ├── ObjectNotFound the object does not exist
        │   ├── ObjectExists   a conditional create found an object under the key
        │   └── TransientStorageError  a failure that retrying the same request may cure
        ├── BackupNotFound     no valid backup matches the request
        ├── ChecksumMismatch   stored bytes differ from the manifest
        ├── RestoreRefused     restoring would overwrite data without --force
        └── VerificationError  restored data differs from what the manifest recorded

Messages are one line, meant for an operator, and never contain secrets.
"""

from __future__ import annotations


class DbguardianError(Exception):
    exit_code = 1


class PolicyError(DbguardianError):
    """One or more problems in the policy, each formatted as ``field.path: reason``."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class UsageError(DbguardianError):
    exit_code = 2


class OperationError(DbguardianError):
    exit_code = 1


class DatabaseError(OperationError):
    pass


class ToolError(OperationError):
    pass


class PipelineError(OperationError):
    pass


class StorageError(OperationError):
    pass


class ObjectNotFound(StorageError):
    pass


class ObjectExists(StorageError):
    """``put_bytes(key, data, if_absent=True)`` found an object under ``key`` (nothing was written)."""


class TransientStorageError(StorageError):
    """A failure that retrying the same request may cure (a dropped connection, throttling, HTTP 503).

    Backends raise it (or classify their own errors as transient) so that the shared retry policy in
    :mod:`dbguardian.storage.retry` retries them; anything else fails at once.
    """


class SecretUnavailable(OperationError):
    """A secret configured as a file cannot be read (the message names the key and path, never the content)."""


class BackupNotFound(OperationError):
    pass


class ChecksumMismatch(OperationError):
    pass


class RestoreRefused(OperationError):
    pass


class VerificationError(OperationError):
    pass
