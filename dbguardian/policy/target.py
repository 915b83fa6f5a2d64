"""Policy models for one database to keep recoverable: its connection, storages, schedules, retention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field, SecretStr, field_validator

from dbguardian.policy.base import NAME_PATTERN, Duration, StrictModel, validate_dsn
from dbguardian.policy.codec import CompressionConfig, EncryptionConfig
from dbguardian.policy.drill import DrillConfig, VerifyConfig
from dbguardian.policy.monitoring import HealthOverrides, PingsConfig
from dbguardian.policy.secrets import HasSecrets
from dbguardian.policy.trigger import Trigger

MANUAL_TIER = "manual"
"""Tier of backups taken by hand (``dbguardian backup``)."""
SAFETY_TIER = "safety"
"""Tier of the copy a restore takes before replacing a database; never "the latest backup"."""
RESERVED_TIERS = (MANUAL_TIER, SAFETY_TIER)


class ScheduleConfig(Trigger):
    """When a tier runs (a 5-field ``cron`` in the policy's timezone, or ``every``) and how many to keep."""

    keep: int | None = Field(default=None, ge=1)


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
