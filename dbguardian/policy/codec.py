"""Policy models for how a backup's bytes are transformed: compression and encryption."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from dbguardian.policy.base import StrictModel

# algorithm -> (lowest level, highest level, default level)
_LEVELS = {"zstd": (1, 19, 3), "gzip": (1, 9, 6), "none": (0, 0, 0)}


class CompressionConfig(StrictModel):
    algorithm: Literal["zstd", "gzip", "none"] = "zstd"
    level: int | None = None
    threads: int = Field(default=0, ge=0, description="zstd worker threads; 0 = one per CPU")

    @model_validator(mode="before")
    @classmethod
    def _default_level(cls, data: Any) -> Any:
        # The algorithm's default level is filled in before validation (the model is frozen).
        if isinstance(data, dict) and data.get("level") is None:
            algorithm = data.get("algorithm", "zstd")
            if isinstance(algorithm, str) and algorithm in _LEVELS:
                return {**data, "level": _LEVELS[algorithm][2]}
        return data

    @model_validator(mode="after")
    def _level_in_range(self) -> CompressionConfig:
        low, high, _default = _LEVELS[self.algorithm]
        if self.level is not None and not low <= self.level <= high:
            raise ValueError(f"level {self.level} is out of range for {self.algorithm} ({low}-{high})")
        return self

    @property
    def effective_level(self) -> int:
        return self.level if self.level is not None else _LEVELS[self.algorithm][2]


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
