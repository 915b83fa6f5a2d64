"""The ``type: gcs`` storage entry of the policy (light: imports no Google or HTTP library).

Its capabilities are declared here too, so the registry can answer without importing the client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dbguardian.policy.base import Size
from dbguardian.policy.storage import StorageConfigBase
from dbguardian.storage.base import Capabilities

KiB = 1024
MiB = 1024 * KiB
CHUNK_GRANULE = 256 * KiB
"""GCS takes the chunks of a resumable upload (all but the last) only in multiples of 256 KiB."""

GCS_CAPABILITIES = Capabilities(
    delimiter_listing=True,  # objects.list with delimiter=/ (prefixes)
    stale_upload_cleanup=True,  # resumable sessions recorded in upload markers, cancelled by prune
    conditional_put=True,  # uploads with ifGenerationMatch=0
)


class GcsStorageConfig(StorageConfigBase):
    """A Google Cloud Storage bucket, through the JSON API."""

    type: Literal["gcs"]
    bucket: str = Field(min_length=3, max_length=222)
    prefix: str = ""
    credentials_file: Path | None = None
    """A credentials JSON file (service-account key, or workload identity federation config);
    without it, the application default credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC
    file, the GCE/GKE metadata server)."""
    anonymous: bool = False
    """Send no credentials at all: for an emulator (fake-gcs-server) at ``endpoint_url``."""
    endpoint_url: str | None = None
    """Another API root than https://storage.googleapis.com (a Private Service Connect endpoint, an emulator)."""
    storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] | None = None
    """Storage class of new objects (default: the bucket's default class)."""
    # One chunk being filled plus one being sent: about 2 x chunk_size of memory per object being written.
    chunk_size: Size = 8 * MiB
    retries: int = Field(default=5, ge=0, le=20)
    """Attempts after the first for a request that failed transiently (dbguardian.storage.retry)."""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        cleaned = value.strip("/")
        if cleaned and any(part in ("", ".", "..") for part in cleaned.split("/")):
            raise ValueError("must be a plain path like 'backups/prod' (no empty, '.' or '..' segments)")
        return cleaned

    @field_validator("chunk_size")
    @classmethod
    def _chunk_size(cls, value: int) -> int:
        if value % CHUNK_GRANULE or not CHUNK_GRANULE <= value <= 1024 * MiB:
            raise ValueError("must be a multiple of 256KiB between 256KiB and 1GiB (GCS resumable upload chunks)")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> GcsStorageConfig:
        if self.anonymous and self.credentials_file is not None:
            raise ValueError("set credentials_file or anonymous: true, not both")
        return self
