"""The ``type: s3`` storage entry of the policy (light: imports no AWS library).

Its capabilities are declared here too, so the registry can answer without importing aioboto3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dbguardian.policy.base import Size
from dbguardian.policy.storage import StorageConfigBase
from dbguardian.storage.base import Capabilities

S3_CAPABILITIES = Capabilities(
    delimiter_listing=True,  # ListObjectsV2 with Delimiter="/" (CommonPrefixes)
    stale_upload_cleanup=True,  # multipart uploads neither completed nor aborted
    conditional_put=True,  # PutObject with If-None-Match: *
)


class S3StorageConfig(StorageConfigBase):
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
    """Attempts after the first for a request that failed transiently (dbguardian.storage.retry)."""

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
