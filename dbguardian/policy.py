"""The policy file: pydantic models, environment overrides and one-line-per-problem errors.

The YAML is validated strictly (unknown keys are errors). Environment variables with the prefix
``DBGUARDIAN_`` override it, nested with ``__``: ``DBGUARDIAN_TARGETS__APP__PASSWORD`` sets
``targets.app.password``, so secrets never need to be in the file.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dbguardian.errors import PolicyError
from dbguardian.policy_base import Duration, Size, StrictModel, validate_cron, validate_dsn
from dbguardian.policy_checks import (
    DEFAULT_HEALTH_CRON,
    HEALTH_DEFAULTS,
    AlertsConfig,
    DrillCheck,
    DrillConfig,
    EmailConfig,
    HealthOverrides,
    HealthRules,
    PingsConfig,
    SlackConfig,
    VerifyConfig,
    WebhookConfig,
)

__all__ = [
    "DEFAULT_HEALTH_CRON",
    "HEALTH_DEFAULTS",
    "AlertsConfig",
    "DrillCheck",
    "DrillConfig",
    "Duration",
    "EmailConfig",
    "HealthOverrides",
    "HealthRules",
    "PingsConfig",
    "Policy",
    "Size",
    "SlackConfig",
    "StrictModel",
    "TargetConfig",
    "VerifyConfig",
    "WebhookConfig",
    "load_policy",
    "parse_policy",
    "summarize",
]

DEFAULT_POLICY_PATH = Path("/etc/dbguardian/policy.yaml")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class LocalStorageConfig(StrictModel):
    """A directory on a local or mounted filesystem."""

    type: Literal["local"]
    path: Path

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value


class S3StorageConfig(StrictModel):
    """An S3 bucket or S3-compatible store (MinIO, Cloudflare R2, GCS interoperability, Ceph...)."""

    type: Literal["s3"]
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    storage_class: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    access_key_id_file: Path | None = None
    secret_access_key_file: Path | None = None
    # Defaults sized for memory (about part_size x (max_inflight_parts + 1) = 15 MiB per object being
    # written); raise max_inflight_parts for more upload throughput (bench/README.md).
    part_size: Size = 5 * 1024 * 1024
    max_inflight_parts: int = Field(default=2, ge=1, le=64)
    retries: int = Field(default=5, ge=0, le=20)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        cleaned = value.strip("/")
        if any(part in ("", ".", "..") for part in cleaned.split("/")) and cleaned:
            raise ValueError("must be a plain path like 'backups/prod' (no empty, '.' or '..' segments)")
        return cleaned

    @field_validator("part_size")
    @classmethod
    def _part_size(cls, value: int) -> int:
        if not 5 * 1024 * 1024 <= value <= 5 * 1024**3:
            raise ValueError("must be between 5MB and 5GB (S3 multipart limits)")
        return value

    @model_validator(mode="after")
    def _key_files_together(self) -> S3StorageConfig:
        if (self.access_key_id_file is None) != (self.secret_access_key_file is None):
            raise ValueError("set both access_key_id_file and secret_access_key_file, or neither")
        return self


StorageConfig = Annotated[LocalStorageConfig | S3StorageConfig, Field(discriminator="type")]
STORAGE_TYPES = ("local", "s3")

_LEVELS = {"zstd": (1, 19, 3), "gzip": (1, 9, 6), "none": (0, 0, 0)}


class CompressionConfig(StrictModel):
    algorithm: Literal["zstd", "gzip", "none"] = "zstd"
    level: int | None = None
    threads: int = Field(default=0, ge=0, description="zstd worker threads; 0 = one per CPU")

    @model_validator(mode="after")
    def _level_in_range(self) -> CompressionConfig:
        low, high, default = _LEVELS[self.algorithm]
        if self.level is None:
            object.__setattr__(self, "level", default)
        elif not low <= self.level <= high:
            raise ValueError(f"level {self.level} is out of range for {self.algorithm} ({low}-{high})")
        return self

    @property
    def effective_level(self) -> int:
        return self.level if self.level is not None else _LEVELS[self.algorithm][2]


class ScheduleConfig(StrictModel):
    """When a tier runs (a 5-field ``cron`` in the policy's timezone, or ``every``) and how many to keep."""

    cron: Annotated[str, BeforeValidator(str.strip)] | None = None
    every: Duration | None = None
    keep: int | None = Field(default=None, ge=1)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else validate_cron(value)

    @field_validator("every")
    @classmethod
    def _every_positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleConfig:
        if (self.cron is None) == (self.every is None):
            raise ValueError("set exactly one of 'cron' or 'every'")
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


class AgeEncryptionConfig(StrictModel):
    method: Literal["age"]
    recipients: list[str] = Field(min_length=1)

    @field_validator("recipients")
    @classmethod
    def _public_keys(cls, value: list[str]) -> list[str]:
        for recipient in value:
            if not (recipient.startswith("age1") or recipient.startswith(("ssh-ed25519 ", "ssh-rsa "))):
                raise ValueError(f"{recipient[:12]}… is not an age public key (age1…) or SSH public key")
        return value


class GpgEncryptionConfig(StrictModel):
    method: Literal["gpg"]
    recipients: list[str] = Field(min_length=1, description="key ids or fingerprints")
    keyring: Path | None = Field(default=None, description="file of the recipients' public keys (armored or binary)")


EncryptionConfig = Annotated[AgeEncryptionConfig | GpgEncryptionConfig, Field(discriminator="method")]


class TargetConfig(StrictModel):
    """One database to keep recoverable."""

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
            if tier in ("manual", "safety"):
                raise ValueError(f"tier name {tier!r} is reserved")
        return value

    @field_validator("storage")
    @classmethod
    def _unique_storage(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a storage twice")
        return value

    def read_password(self) -> str | None:
        """The password from the environment/policy, else from ``password_file``, else None (libpq's own)."""
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip("\r\n")
            except OSError as error:
                from dbguardian.errors import DatabaseError

                raise DatabaseError(f"cannot read password_file {self.password_file}: {error.strerror}") from None
        return None


DEFAULT_METRICS_PORT = 9863


class MetricsConfig(StrictModel):
    """The daemon's one HTTP listener: /metrics, /healthz, /readyz."""

    listen: str = f"127.0.0.1:{DEFAULT_METRICS_PORT}"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _host, separator, port = value.rpartition(":")
        if not separator or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:{DEFAULT_METRICS_PORT})")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"  # noqa: S104 (":PORT" means all)

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Policy(BaseSettings):
    """The whole policy file."""

    model_config = SettingsConfigDict(
        env_prefix="DBGUARDIAN_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    version: Literal[1]
    state_dir: Path
    timezone: str = "UTC"
    leftover_grace: Duration = timedelta(hours=6)
    pg_bin_dirs: list[Path] = Field(default_factory=list)
    storage: dict[str, StorageConfig] = Field(min_length=1)
    targets: dict[str, TargetConfig] = Field(min_length=1)
    # The daemon (dbguardian run)
    max_concurrent_backups: int = Field(default=1, ge=1)
    catch_up: bool = True
    shutdown_grace: Duration = timedelta(seconds=60)
    misfire_grace_time: Duration = timedelta(hours=1)
    metrics: MetricsConfig = MetricsConfig()
    health: HealthOverrides = HealthOverrides()
    alerts: AlertsConfig = AlertsConfig()

    def health_rules(self, target: str) -> HealthRules:
        """Defaults, then the top-level ``health`` block, then the target's own overrides."""
        values = HEALTH_DEFAULTS.model_dump()
        for layer in (self.health, self.targets[target].health):
            given = layer.model_dump(exclude_none=True)
            if "every" in given:
                values["cron"] = None
            if "cron" in given:
                values["every"] = None
            values.update(given)
        return HealthRules(**values)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the YAML (passed as init kwargs); no .env or secrets dir magic.
        return (env_settings, init_settings)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Berlin)") from None
        return value

    @field_validator("storage", "targets")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"name {name!r} must be letters, digits, '_', '-', '.' (at most 63)")
        return value

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    def cross_check(self) -> list[str]:
        """Problems that span sections (a target naming an undefined storage)."""
        problems = []
        for target_name, target in self.targets.items():
            for index, storage_name in enumerate(target.storage):
                if storage_name not in self.storage:
                    defined = ", ".join(sorted(self.storage)) or "none"
                    problems.append(
                        f"targets.{target_name}.storage.{index}: unknown storage {storage_name!r} (defined: {defined})"
                    )
            for storage_name in target.retention.storage:
                if storage_name not in target.storage:
                    problems.append(
                        f"targets.{target_name}.retention.storage.{storage_name}: "
                        f"the target does not use this storage (it uses: {', '.join(target.storage)})"
                    )
        return problems


def _format_error(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    # Drop discriminator tags pydantic inserts into the path (storage.local.local.path).
    cleaned: list[str] = []
    for index, part in enumerate(loc):
        if index == 2 and loc[0] == "storage" and part in STORAGE_TYPES:
            continue  # pydantic's discriminator tag, not a key of the file
        if cleaned and cleaned[-1] == "encryption" and part in ("age", "gpg"):
            continue
        cleaned.append(part)
    message = str(error["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] == "union_tag_invalid":
        context = error.get("ctx", {})
        key = context.get("discriminator", "type").strip("'")
        message = f"unknown {key} {context.get('tag')!r}; expected one of: {context.get('expected_tags')}"
    field = ".".join(cleaned) or "policy"
    return f"{field}: {message}"


def parse_policy(data: Any) -> Policy:
    """Validate already-parsed YAML data (plus environment overrides) into a :class:`Policy`."""
    if not isinstance(data, dict):
        raise PolicyError(["policy: the file must be a YAML mapping (version, state_dir, storage, targets)"])
    try:
        policy = Policy(**data)
    except ValidationError as error:
        raise PolicyError([_format_error(item) for item in error.errors()]) from None
    problems = policy.cross_check()
    if problems:
        raise PolicyError(problems)
    return policy


def load_policy(path: Path) -> Policy:
    """Read and validate the policy file; raises :class:`PolicyError` with one line per problem."""
    try:
        text = path.read_text()
    except OSError as error:
        raise PolicyError([f"policy: cannot read {path}: {error.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PolicyError([f"policy: YAML syntax error{where}: {problem}"]) from None
    return parse_policy(data)


def summarize(policy: Policy) -> str:
    schedules = sum(len(target.schedules) for target in policy.targets.values())
    return (
        f"policy ok: {len(policy.targets)} target(s) ({', '.join(policy.targets)}), "
        f"{len(policy.storage)} storage(s) ({', '.join(policy.storage)}), {schedules} schedule(s), "
        f"timezone {policy.timezone}"
    )
