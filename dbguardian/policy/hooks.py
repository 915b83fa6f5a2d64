"""A target's ``hooks:`` (programs run around a restore) and the policy's ``seed:`` profiles (local data)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator

from dbguardian.policy.base import Duration, StrictModel


def _argv(value: list[str]) -> list[str]:
    if value and (not value[0].strip() or any("\0" in word for word in value)):
        raise ValueError("must be a program and its arguments (a list of words, no shell), e.g. [systemctl, stop, app]")
    return value


class HooksConfig(StrictModel):
    """Each hook is an argument list run without a shell, with ``timeout``. ``pre_restore`` runs before the
    restore touches anything, and a failure stops it; ``post_restore`` runs once the restored database is
    in place (a failure is reported, the restore stays)."""

    pre_restore: list[str] = Field(default_factory=list)
    post_restore: list[str] = Field(default_factory=list)
    timeout: Duration = timedelta(minutes=5)

    @field_validator("pre_restore", "post_restore")
    @classmethod
    def _is_argv(cls, value: list[str]) -> list[str]:
        return _argv(value)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value


class SeedConfig(StrictModel):
    """``seed: {profiles: {light: [seeds/light.sql], medium: [seeds/light.sql, seeds/medium.sql]}}``:
    named lists of SQL files (relative to the policy file) that ``seed`` and ``reset-local --seed`` load."""

    profiles: dict[str, list[Path]] = Field(default_factory=dict)

    @field_validator("profiles")
    @classmethod
    def _not_empty(cls, value: dict[str, list[Path]]) -> dict[str, list[Path]]:
        for name, paths in value.items():
            if not paths:
                raise ValueError(f"profile {name!r} lists no file")
        return value
