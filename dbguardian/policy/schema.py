"""A target's ``schema:``: the scheduled drift check of its schema against a committed file."""

from __future__ import annotations

from pathlib import Path

from dbguardian.policy.trigger import Trigger


class SchemaConfig(Trigger):
    """``file``: a ``dbguardian schema dump`` output (relative paths are relative to the policy file);
    ``cron`` / ``every``: when the ``schema_drift`` check compares the live schema with it."""

    file: Path
    with_privileges: bool = False
    """Compare ownership and privileges too (the file must have been dumped with ``--with-privileges``)."""

    def path(self, policy_file: Path | None) -> Path:
        if self.file.is_absolute() or policy_file is None:
            return self.file
        return policy_file.parent / self.file
