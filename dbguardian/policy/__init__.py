"""The policy file, one module per topic.

- ``base``: the strict base model, unit types (Duration, Size), shared validators
- ``trigger``: when something runs (``cron`` | ``every``), reused by schedules, health, drills, verify
- ``secrets``: one secret reference type (inline value or ``*_file``), one resolve, one error
- ``storage``: the common base of ``storage:`` entries; each backend owns its config model
- ``target``: a database to keep recoverable (schedules, retention)
- ``codec``: compression and encryption
- ``monitoring``: health checks, alert channels, pings
- ``drill``: restore drills and verify jobs
- ``wal``: continuous WAL archiving (point-in-time recovery)
- ``settings``: the whole :class:`Policy` (environment overrides, cross-section checks)
- ``loader``: YAML → Policy with one line per problem
"""

from __future__ import annotations

from dbguardian.policy.base import Duration, Size, StrictModel
from dbguardian.policy.codec import AgeEncryptionConfig, CompressionConfig, EncryptionConfig, GpgEncryptionConfig
from dbguardian.policy.drill import DrillCheck, DrillConfig, VerifyConfig
from dbguardian.policy.hooks import HooksConfig
from dbguardian.policy.loader import DEFAULT_POLICY_PATH, load_policy, parse_policy, summarize
from dbguardian.policy.monitoring import (
    DEFAULT_HEALTH_CRON,
    HEALTH_DEFAULTS,
    AlertsConfig,
    EmailConfig,
    HealthOverrides,
    HealthRules,
    IntegrityOverrides,
    IntegrityRules,
    PingsConfig,
    SlackConfig,
    WebhookConfig,
)
from dbguardian.policy.secrets import SecretRef
from dbguardian.policy.settings import DEFAULT_METRICS_PORT, CoordinationConfig, MetricsConfig, Policy
from dbguardian.policy.storage import StorageConfig, StorageConfigBase
from dbguardian.policy.target import RetentionConfig, ScheduleConfig, StorageRetentionConfig, TargetConfig
from dbguardian.policy.trigger import Trigger
from dbguardian.policy.wal import WalConfig

__all__ = [
    "DEFAULT_HEALTH_CRON",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_POLICY_PATH",
    "HEALTH_DEFAULTS",
    "AgeEncryptionConfig",
    "AlertsConfig",
    "CompressionConfig",
    "CoordinationConfig",
    "DrillCheck",
    "DrillConfig",
    "Duration",
    "EmailConfig",
    "EncryptionConfig",
    "GpgEncryptionConfig",
    "HealthOverrides",
    "HealthRules",
    "HooksConfig",
    "IntegrityOverrides",
    "IntegrityRules",
    "MetricsConfig",
    "PingsConfig",
    "Policy",
    "RetentionConfig",
    "ScheduleConfig",
    "SecretRef",
    "Size",
    "SlackConfig",
    "StorageConfig",
    "StorageConfigBase",
    "StorageRetentionConfig",
    "StrictModel",
    "TargetConfig",
    "Trigger",
    "VerifyConfig",
    "WalConfig",
    "WebhookConfig",
    "load_policy",
    "parse_policy",
    "summarize",
]
