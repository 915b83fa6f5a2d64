"""The ``type: azure`` storage entry of the policy (light: imports no Azure library).

Its capabilities are declared here too, so the registry can answer without importing the Azure SDK.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dbguardian.policy.base import Size
from dbguardian.policy.storage import StorageConfigBase
from dbguardian.storage.base import Capabilities

AZURE_CAPABILITIES = Capabilities(
    delimiter_listing=True,  # List Blobs with delimiter "/" (BlobPrefix entries)
    stale_upload_cleanup=True,  # blobs holding only uncommitted blocks (an upload never committed nor aborted)
    conditional_put=True,  # Put Blob with If-None-Match: *
)

MiB = 1024 * 1024
MIN_BLOCK_SIZE = 1 * MiB
MAX_BLOCK_SIZE = 4000 * MiB  # the service's limit for one Put Block
CONTAINER_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")


class AzureStorageConfig(StorageConfigBase):
    """A container of an Azure Storage account (Blob Storage), or of the Azurite emulator."""

    type: Literal["azure"]
    account_url: str | None = None
    """``https://<account>.blob.core.windows.net``; not set when ``connection_string_file`` names the account."""
    container: str
    prefix: str = ""
    connection_string_file: Path | None = None
    sas_token_file: Path | None = None
    access_tier: Literal["Hot", "Cool", "Cold"] | None = None
    """Tier of every blob written (None: the account's default tier). Archive is refused (see the validator)."""
    # Defaults sized for memory (about block_size x (max_inflight_blocks + 1) = 12 MiB per object being
    # written); raise max_inflight_blocks for more upload throughput.
    block_size: Size = 4 * MiB
    max_inflight_blocks: int = Field(default=2, ge=1, le=64)
    retries: int = Field(default=5, ge=0, le=20)
    """Attempts after the first for a request that failed transiently (dbguardian.storage.retry)."""

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        if not CONTAINER_NAME.match(value):
            raise ValueError("must be 3-63 lowercase letters, digits and single hyphens (Azure container names)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        cleaned = value.strip("/")
        if cleaned and any(part in ("", ".", "..") for part in cleaned.split("/")):
            raise ValueError("must be a plain path like 'backups/prod' (no empty, '.' or '..' segments)")
        return cleaned

    @field_validator("account_url")
    @classmethod
    def _account_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")) or "?" in value:
            raise ValueError(
                "must be the account's blob endpoint, e.g. https://myaccount.blob.core.windows.net "
                "(no query string: give a SAS token in sas_token_file)"
            )
        return value.rstrip("/")

    @field_validator("access_tier", mode="before")
    @classmethod
    def _no_archive(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() == "archive":
            raise ValueError(
                "Archive is not allowed: archived blobs cannot be read without hours of rehydration, so "
                "verify, drills and restores (and the catalog, which reads manifests) would fail; use Cold, "
                "or a lifecycle rule on the account for copies nobody restores from"
            )
        return value

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, value: int) -> int:
        if not MIN_BLOCK_SIZE <= value <= MAX_BLOCK_SIZE:
            raise ValueError("must be between 1MB and 4000MB (Azure block limits)")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> AzureStorageConfig:
        if self.connection_string_file is not None and self.sas_token_file is not None:
            raise ValueError("set connection_string_file or sas_token_file, not both")
        if self.connection_string_file is not None and self.account_url is not None:
            raise ValueError("the connection string names the account: set connection_string_file or account_url, not both")
        if self.connection_string_file is None and self.account_url is None:
            raise ValueError(
                "set account_url (with sas_token_file or the default Azure credential chain) or connection_string_file"
            )
        return self
