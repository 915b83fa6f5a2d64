"""Policy models for proving backups restore: scheduled restore drills and verify (re-read) jobs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator

from dbguardian.policy.base import Duration, StrictModel, validate_dsn
from dbguardian.policy.trigger import Trigger

DEFAULT_DRILL_CRON = "0 6 2 * *"

_EXPECT = re.compile(r"^\s*(?:(=|==|!=|<>|>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)|(true|false|null|empty))\s*$", re.I)


class DrillCheck(StrictModel):
    """A user check run on the restored copy: ``sql`` returns one value, ``expect`` compares it."""

    name: str = Field(min_length=1)
    sql: str = Field(min_length=1)
    expect: str

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: str) -> str:
        if not _EXPECT.match(value):
            raise ValueError(f"{value!r} is not a comparison like '>= 1', '= 0', 'true', 'false', 'null'")
        return value


class DrillConfig(Trigger):
    """Scheduled restore drills: restore a backup into a scratch database and check the data
    (monthly on the 2nd at 06:00 unless ``cron`` or ``every`` says otherwise)."""

    optional_trigger: ClassVar[bool] = True

    enabled: bool = True
    kind: Literal["logical", "pitr"] | None = None
    """``logical``: restore the newest pg_dump backup; ``pitr``: a restore point, the newest base backup plus
    WAL up to it in a throw-away cluster. Unset: ``pitr`` for targets with ``wal:`` and a physical tier."""
    mode: Literal["server", "local_cluster"] = "server"
    dsn: Annotated[str, AfterValidator(validate_dsn)] | None = None
    password_file: Path | None = None
    pick: Literal["newest", "random_recent"] = "newest"
    recent: int = Field(default=5, ge=1)
    jobs: int = Field(default=2, ge=1, le=64)
    rto_target: Duration | None = None
    amcheck: bool = False
    identity_file: Path | None = None
    checks: list[DrillCheck] = Field(default_factory=list)

    @property
    def effective_cron(self) -> str | None:
        return None if self.every is not None else (self.cron or DEFAULT_DRILL_CRON)


class VerifyConfig(Trigger):
    """Scheduled re-reads of stored objects (sha256 and size against the manifest)."""

    all: bool = False
