"""Policy models for one database to keep recoverable: its connection, storages, schedules, retention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from dbguardian.policy.base import NAME_PATTERN, Duration, StrictModel, validate_dsn
from dbguardian.policy.codec import CompressionConfig, EncryptionConfig
from dbguardian.policy.drill import DrillConfig, VerifyConfig
from dbguardian.policy.hooks import HooksConfig
from dbguardian.policy.monitoring import HealthOverrides, PingsConfig
from dbguardian.policy.schema import SchemaConfig
from dbguardian.policy.secrets import HasSecrets
from dbguardian.policy.trigger import Trigger
from dbguardian.policy.wal import WalConfig

MANUAL_TIER = "manual"
"""Tier of backups taken by hand (``dbguardian backup``)."""
SAFETY_TIER = "safety"
"""Tier of the copy a restore takes before replacing a database; never "the latest backup"."""
RESERVED_TIERS = (MANUAL_TIER, SAFETY_TIER)


BackupKind = Literal["logical", "physical"]


class ScheduleConfig(Trigger):
    """When a tier runs (a 5-field ``cron`` in the policy's timezone, or ``every``), how many to keep, and
    what it takes: ``logical`` (pg_dump, the default) or ``physical`` (a base backup; needs ``wal:``)."""

    keep: int | None = Field(default=None, ge=1)
    kind: BackupKind = "logical"
    incremental: bool = False
    """A physical tier of incremental base backups (PostgreSQL 17+, ``summarize_wal = on``): each is taken
    against the newest base backup before it and restored with its chain (``pg_combinebackup``). A server
    without WAL summaries gets a full base backup and a warning."""

    @model_validator(mode="after")
    def _incremental_is_physical(self) -> ScheduleConfig:
        if self.incremental and self.kind != "physical":
            raise ValueError("incremental: true needs kind: physical (incremental base backups; pg_dump has none)")
        return self


class StorageRetentionConfig(StrictModel):
    """Overrides of a target's retention on one storage (keep 3 days locally, a year off-site)."""

    max_age: Duration | None = None
    min_keep: int | None = Field(default=None, ge=1)
    keep: dict[str, int] = Field(default_factory=dict, description="tier -> count, overriding schedules.<tier>.keep")


class RetentionConfig(StrictModel):
    max_age: Duration | None = None
    min_keep: int = Field(default=2, ge=1)
    storage: dict[str, StorageRetentionConfig] = Field(default_factory=dict)


class TargetConfig(HasSecrets, StrictModel):
    """One database to keep recoverable. Its password: ``secret("password").resolve()``."""

    location: ClassVar[str] = ""

    dsn: Annotated[str, BeforeValidator(str.strip)]
    password: SecretStr | None = None
    password_file: Path | None = None
    storage: list[str] = Field(min_length=1)
    compression: CompressionConfig = CompressionConfig()
    schedules: dict[str, ScheduleConfig] = Field(default_factory=dict)
    globals: bool = False
    retention: RetentionConfig = RetentionConfig()
    encryption: EncryptionConfig | None = None
    health: HealthOverrides = HealthOverrides()
    pings: PingsConfig = PingsConfig()
    drill: DrillConfig = DrillConfig()
    verify: VerifyConfig | None = None
    wal: WalConfig | None = None
    """Continuous WAL archiving (point-in-time recovery); physical tiers and PITR drills need it."""
    hooks: HooksConfig = HooksConfig()
    """Programs run around a restore (``pre_restore`` / ``post_restore``)."""
    schema_check: SchemaConfig | None = Field(default=None, alias="schema")
    """``schema:`` in the policy (the attribute name ``schema`` is pydantic's): the scheduled schema
    drift check against a committed ``schema dump`` file."""

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str) -> str:
        return validate_dsn(value)

    @field_validator("schedules")
    @classmethod
    def _tier_names(cls, value: dict[str, ScheduleConfig]) -> dict[str, ScheduleConfig]:
        for tier in value:
            if not NAME_PATTERN.match(tier):
                raise ValueError(f"tier name {tier!r} must be letters, digits, '_', '-', '.'")
            if tier in RESERVED_TIERS:
                raise ValueError(f"tier name {tier!r} is reserved")
        return value

    @field_validator("storage")
    @classmethod
    def _unique_storage(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a storage twice")
        return value

    @model_validator(mode="after")
    def _physical_needs_wal(self) -> TargetConfig:
        # A base backup taken with ``-X none`` is restorable only with the WAL archive beside it.
        physical = [tier for tier, schedule in self.schedules.items() if schedule.kind == "physical"]
        if physical and self.wal is None:
            raise ValueError(f"tier {physical[0]!r} is physical: the target needs a 'wal:' block (its WAL archive)")
        if self.drill.kind == "pitr" and self.wal is None:
            raise ValueError("drill.kind 'pitr' needs a 'wal:' block (its WAL archive)")
        return self

    def physical_tiers(self) -> list[str]:
        return [tier for tier, schedule in self.schedules.items() if schedule.kind == "physical"]

    def tier_incremental(self, tier: str) -> bool:
        schedule = self.schedules.get(tier)
        return schedule is not None and schedule.incremental

    def tier_kind(self, tier: str) -> BackupKind:
        """The kind of backup a tier takes; ``manual`` and ``safety`` are logical unless asked otherwise."""
        schedule = self.schedules.get(tier)
        return "logical" if schedule is None else schedule.kind

    @property
    def drill_kind(self) -> Literal["logical", "pitr"]:
        """PITR drills by default for targets that archive WAL and take base backups."""
        if self.drill.kind is not None:
            return self.drill.kind
        return "pitr" if self.wal is not None and self.physical_tiers() else "logical"
