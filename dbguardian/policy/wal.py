"""Policy model of continuous WAL archiving for point-in-time recovery (a target's ``wal:`` block).

PostgreSQL's archiver puts each finished WAL file into ``spool`` (``basic_archive`` on 15+, ``dbguardian
wal-push`` on 13–14); the daemon's WAL shipper compresses (and encrypts, with the target's
``encryption``) each one and writes it to every storage of the target, then removes it from the spool.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from dbguardian.policy.base import AbsolutePath, Duration, Size, StrictModel
from dbguardian.policy.codec import CompressionConfig

DEFAULT_RPO_TARGET = timedelta(minutes=5)
DEFAULT_MAX_SPOOL = 10 * 1024**3


class WalConfig(StrictModel):
    """Continuous WAL archiving of one target."""

    spool: AbsolutePath
    """Where PostgreSQL puts finished WAL files (``basic_archive.archive_directory`` / ``wal-push``)."""
    compression: CompressionConfig = CompressionConfig()
    rpo_target: Duration = DEFAULT_RPO_TARGET
    """Alert when the newest archived WAL on any storage, or the spool's oldest file, is older than this."""
    max_spool: Size = DEFAULT_MAX_SPOOL
    """Alert (never delete) when the spool holds more than this many bytes."""
    parallel: int = Field(default=2, ge=1, le=16)
    """Segments shipped at once (each holds at most one compressed segment in memory)."""
    wait_for_wal: Duration = timedelta(minutes=10)
    """How long a base backup waits for the WAL it needs (up to its stop LSN) to reach every storage."""
    checkpoint: Literal["fast", "spread"] = "fast"
    """``fast``: the base backup starts at once (an immediate checkpoint); ``spread``: it waits for a
    checkpoint spread over ``checkpoint_completion_target`` (gentler on a busy server)."""

    @field_validator("rpo_target")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value
