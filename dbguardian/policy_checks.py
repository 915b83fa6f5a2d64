"""Policy models for what watches the backups: health checks, alert channels, pings, drills, verify."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from dbguardian.policy_base import Duration, Size, StrictModel, validate_cron, validate_dsn

DEFAULT_HEALTH_CRON = "0 */6 * * *"


class HealthOverrides(StrictModel):
    """Health-check thresholds; at top level the defaults, per target the overrides."""

    cron: Annotated[str, BeforeValidator(str.strip)] | None = None
    every: Duration | None = None
    max_age: Duration | None = None
    min_size: Size | None = None
    shrink_ratio: float | None = Field(default=None, gt=0, le=1)
    min_count: int | None = Field(default=None, ge=0)
    db_failures: int | None = Field(default=None, ge=1)
    renotify: Duration | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else validate_cron(value)

    @model_validator(mode="after")
    def _one_trigger(self) -> HealthOverrides:
        if self.cron is not None and self.every is not None:
            raise ValueError("set at most one of 'cron' or 'every'")
        return self


class HealthRules(StrictModel):
    """Effective thresholds for one target."""

    cron: str | None
    every: timedelta | None
    max_age: timedelta
    min_size: int
    shrink_ratio: float
    min_count: int
    db_failures: int
    renotify: timedelta


HEALTH_DEFAULTS = HealthRules(
    cron=DEFAULT_HEALTH_CRON,
    every=None,
    max_age=timedelta(hours=26),
    min_size=1024 * 1024,
    shrink_ratio=0.5,
    min_count=2,
    db_failures=2,
    renotify=timedelta(hours=24),
)


def _secret_from(value: SecretStr | None, path: Path | None, what: str) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as error:
            from dbguardian.errors import OperationError

            raise OperationError(f"cannot read {what} file {path}: {error.strerror}") from None
    return None


class PingsConfig(StrictModel):
    """Dead-man pings per backup job (healthchecks.io convention): URLs, or files holding them."""

    start: SecretStr | None = None
    success: SecretStr | None = None
    fail: SecretStr | None = None
    start_file: Path | None = None
    success_file: Path | None = None
    fail_file: Path | None = None

    def url(self, event: str) -> str | None:
        return _secret_from(getattr(self, event), getattr(self, f"{event}_file"), f"pings.{event}")


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


class DrillConfig(StrictModel):
    """Scheduled restore drills: restore a backup into a scratch database and check the data."""

    enabled: bool = True
    cron: Annotated[str, BeforeValidator(str.strip)] | None = None
    every: Duration | None = None
    mode: Literal["server", "local_cluster"] = "server"
    dsn: str | None = None
    password_file: Path | None = None
    pick: Literal["newest", "random_recent"] = "newest"
    recent: int = Field(default=5, ge=1)
    jobs: int = Field(default=2, ge=1, le=64)
    rto_target: Duration | None = None
    amcheck: bool = False
    identity_file: Path | None = None
    checks: list[DrillCheck] = Field(default_factory=list)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else validate_cron(value)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        return None if value is None else validate_dsn(value)

    @model_validator(mode="after")
    def _one_trigger(self) -> DrillConfig:
        if self.cron is not None and self.every is not None:
            raise ValueError("set at most one of 'cron' or 'every'")
        return self

    @property
    def effective_cron(self) -> str | None:
        return None if self.every is not None else (self.cron or "0 6 2 * *")


class VerifyConfig(StrictModel):
    """Scheduled re-reads of stored objects (sha256 and size against the manifest)."""

    cron: Annotated[str, BeforeValidator(str.strip)] | None = None
    every: Duration | None = None
    all: bool = False

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else validate_cron(value)

    @model_validator(mode="after")
    def _one_trigger(self) -> VerifyConfig:
        if (self.cron is None) == (self.every is None):
            raise ValueError("set exactly one of 'cron' or 'every'")
        return self


class SlackConfig(StrictModel):
    webhook_url: SecretStr | None = None
    webhook_url_file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> SlackConfig:
        if (self.webhook_url is None) == (self.webhook_url_file is None):
            raise ValueError("set exactly one of 'webhook_url' or 'webhook_url_file'")
        return self

    def url(self) -> str:
        value = _secret_from(self.webhook_url, self.webhook_url_file, "slack webhook_url")
        assert value is not None
        return value


class WebhookConfig(StrictModel):
    url: SecretStr | None = None
    url_file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> WebhookConfig:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of 'url' or 'url_file'")
        return self

    def resolved_url(self) -> str:
        value = _secret_from(self.url, self.url_file, "webhook url")
        assert value is not None
        return value


class EmailConfig(StrictModel):
    host: str
    port: int = Field(default=587, gt=0, lt=65536)
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=30)

    def resolved_password(self) -> str | None:
        return _secret_from(self.password, self.password_file, "email password")


class AlertsConfig(StrictModel):
    slack: SlackConfig | None = None
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None
    retries: int = Field(default=3, ge=0, le=10)
