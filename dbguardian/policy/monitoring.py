"""Policy models for what watches the backups: health checks (with the integrity re-read budget),
alert channels (Slack, email, webhook) and dead-man pings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator

from dbguardian.policy.base import Duration, Size, StrictModel
from dbguardian.policy.secrets import HasSecrets, url_secret
from dbguardian.policy.trigger import Interval, Trigger

DEFAULT_HEALTH_CRON = "0 */6 * * *"

UrlSecret = Annotated[SecretStr, AfterValidator(url_secret)]


class IntegrityOverrides(StrictModel):
    """``health.integrity``: how often and how much of the newest backup is re-read to check its checksum."""

    every: Interval | None = None
    max_bytes: Size | None = Field(default=None, ge=0)


class HealthOverrides(Trigger):
    """Health-check thresholds; at top level the defaults, per target the overrides."""

    optional_trigger: ClassVar[bool] = True

    max_age: Duration | None = None
    min_size: Size | None = None
    shrink_ratio: float | None = Field(default=None, gt=0, le=1)
    min_count: int | None = Field(default=None, ge=0)
    db_failures: int | None = Field(default=None, ge=1)
    renotify: Duration | None = None
    integrity: IntegrityOverrides = IntegrityOverrides()


class IntegrityRules(StrictModel):
    """Effective integrity re-read budget for one target, per storage.

    ``every``: how often the newest backup on a storage is re-read to check its checksum.
    ``max_bytes``: the most bytes one health run re-reads per storage; a larger backup is left to
    the verify job (S3 egress costs money; a daily re-read of every backup would double it).
    """

    every: timedelta
    max_bytes: int


INTEGRITY_DEFAULTS = IntegrityRules(every=timedelta(hours=24), max_bytes=1024**3)


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
    integrity: IntegrityRules = INTEGRITY_DEFAULTS


HEALTH_DEFAULTS = HealthRules(
    cron=DEFAULT_HEALTH_CRON,
    every=None,
    max_age=timedelta(hours=26),
    min_size=1024 * 1024,
    shrink_ratio=0.5,
    min_count=2,
    db_failures=2,
    renotify=timedelta(hours=24),
    integrity=INTEGRITY_DEFAULTS,
)


def merge_health(layers: list[HealthOverrides]) -> HealthRules:
    """Defaults, then each layer's keys (top-level ``health``, then the target's own); a layer that
    sets ``every`` drops an inherited ``cron`` and the other way round."""
    values = HEALTH_DEFAULTS.model_dump()
    for layer in layers:
        given = layer.model_dump(exclude_none=True)
        integrity = given.pop("integrity", {})
        if "every" in given:
            values["cron"] = None
        if "cron" in given:
            values["every"] = None
        values.update(given)
        values["integrity"] = {**values["integrity"], **integrity}
    return HealthRules(**values)


class PingsConfig(HasSecrets, StrictModel):
    """Dead-man pings per backup job (healthchecks.io convention): URLs, or files holding them."""

    location: ClassVar[str] = "pings."
    url_secrets: ClassVar[frozenset[str]] = frozenset({"start", "success", "fail"})

    start: UrlSecret | None = None
    success: UrlSecret | None = None
    fail: UrlSecret | None = None
    start_file: Path | None = None
    success_file: Path | None = None
    fail_file: Path | None = None


class SlackConfig(HasSecrets, StrictModel):
    location: ClassVar[str] = "alerts.slack."
    url_secrets: ClassVar[frozenset[str]] = frozenset({"webhook_url"})

    webhook_url: UrlSecret | None = None
    webhook_url_file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> SlackConfig:
        if (self.webhook_url is None) == (self.webhook_url_file is None):
            raise ValueError("set exactly one of 'webhook_url' or 'webhook_url_file'")
        return self


class WebhookConfig(HasSecrets, StrictModel):
    location: ClassVar[str] = "alerts.webhook."
    url_secrets: ClassVar[frozenset[str]] = frozenset({"url"})

    url: UrlSecret | None = None
    url_file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> WebhookConfig:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of 'url' or 'url_file'")
        return self


class EmailConfig(HasSecrets, StrictModel):
    location: ClassVar[str] = "alerts.email."

    host: str
    port: int = Field(default=587, gt=0, lt=65536)
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=30)


class AlertsConfig(StrictModel):
    slack: SlackConfig | None = None
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None
    retries: int = Field(default=3, ge=0, le=10)
