"""Google Cloud Storage.

- ``config``: the policy entry (``type: gcs``) and declared capabilities; imports no client library
- ``auth``: access tokens from a credentials file or the application default credentials (gcloud-aio-auth)
- ``storage``: :class:`GcsStorage` (imports aiohttp and gcloud-aio-storage: loaded only when a policy uses GCS)
- ``resumable``: streaming resumable uploads with bounded memory, and their upload markers
"""

from __future__ import annotations

from dbguardian.storage.gcs.config import GCS_CAPABILITIES, GcsStorageConfig

__all__ = ["GCS_CAPABILITIES", "GcsStorageConfig"]
