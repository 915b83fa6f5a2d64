"""The whole policy: top-level keys, environment overrides, and the checks that span sections.

The YAML is validated strictly (unknown keys are errors). Environment variables with the prefix
``DBGUARDIAN_`` override it, nested with ``__``: ``DBGUARDIAN_TARGETS__APP__PASSWORD`` sets
``targets.app.password``, so secrets never need to be in the file.
"""

from __future__ import annotations

import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from dbguardian.errors import UsageError
from dbguardian.policy.base import NAME_PATTERN, AbsolutePath, Duration, StrictModel
from dbguardian.policy.hooks import SeedConfig
from dbguardian.policy.monitoring import AlertsConfig, HealthOverrides, HealthRules, merge_health
from dbguardian.policy.storage import StorageConfig
from dbguardian.policy.target import TargetConfig

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


class CoordinationConfig(StrictModel):
    """Several daemons on one policy (high availability): each target's jobs run on one of them.

    ``advisory_lock``: the daemon that holds a PostgreSQL advisory lock on the target's own server is
    that target's leader and runs all of its jobs; the lock dies with its session, so a dead daemon
    releases it and another takes over at its next check. ``none``: no coordination (one daemon).
    """

    mode: Literal["advisory_lock", "none"] = "advisory_lock"
    group: str = Field(default="dbguardian", min_length=1, max_length=200)
    """Daemons with the same group (and target name) share a target's jobs; another group never blocks them."""
    check_every: Duration = Field(default=timedelta(seconds=5))
    """How often a follower tries to take over, and a leader confirms its session still holds the lock."""

    @field_validator("check_every")
    @classmethod
    def _check_every(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(minutes=5):
            raise ValueError("must be between 1s and 5m")
        return value


class Policy(BaseSettings):
    """The whole policy file."""

    model_config = SettingsConfigDict(
        env_prefix="DBGUARDIAN_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    _source_path: Path | None = PrivateAttr(default=None)
    """The file the policy was read from (``load_policy``): a restored server's restore_command reads it."""

    version: Literal[1]
    state_dir: AbsolutePath
    timezone: str = "UTC"
    leftover_grace: Duration = timedelta(hours=6)
    pg_bin_dirs: list[Path] = Field(default_factory=list)
    storage: dict[str, StorageConfig] = Field(min_length=1)
    targets: dict[str, TargetConfig] = Field(min_length=1)
    # The daemon (dbguardian run)
    max_concurrent_backups: int = Field(default=1, ge=1)
    catch_up: bool = True
    coordination: CoordinationConfig = CoordinationConfig()
    shutdown_grace: Duration = timedelta(seconds=60)
    misfire_grace_time: Duration = timedelta(hours=1)
    metrics: MetricsConfig = MetricsConfig()
    health: HealthOverrides = HealthOverrides()
    alerts: AlertsConfig = AlertsConfig()
    # Local databases (dbguardian seed / reset-local)
    seed: SeedConfig = SeedConfig()

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    def target(self, name: str) -> TargetConfig:
        """The named target; an unknown name is the caller's mistake (UsageError, exit 2)."""
        try:
            return self.targets[name]
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none"
            raise UsageError(f"unknown target {name!r} (policy defines: {known})") from None

    def health_rules(self, target: str) -> HealthRules:
        """Defaults, then the top-level ``health`` block, then the target's own overrides."""
        return merge_health([self.health, self.targets[target].health])

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

    @model_validator(mode="after")
    def _cross_check(self) -> Policy:
        """Problems that span sections, each reported at the path of the key that is wrong."""
        problems: list[InitErrorDetails] = []

        def problem(loc: tuple[str | int, ...], message: str, value: Any) -> None:
            problems.append(InitErrorDetails(type=PydanticCustomError("policy_reference", message), loc=loc, input=value))

        for target_name, target in self.targets.items():
            for index, storage_name in enumerate(target.storage):
                if storage_name not in self.storage:
                    defined = ", ".join(sorted(self.storage)) or "none"
                    problem(
                        ("targets", target_name, "storage", index),
                        f"unknown storage {storage_name!r} (defined: {defined})",
                        storage_name,
                    )
            for storage_name in target.retention.storage:
                if storage_name not in target.storage:
                    problem(
                        ("targets", target_name, "retention", "storage", storage_name),
                        f"the target does not use this storage (it uses: {', '.join(target.storage)})",
                        storage_name,
                    )
        spools: dict[Path, str] = {}
        for target_name, target in self.targets.items():
            if target.wal is None:
                continue
            other = spools.setdefault(target.wal.spool, target_name)
            if other != target_name:
                # One spool per cluster: the shipper of each target would take the other's WAL.
                problem(
                    ("targets", target_name, "wal", "spool"), f"already the spool of target {other!r}", str(target.wal.spool)
                )
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self
