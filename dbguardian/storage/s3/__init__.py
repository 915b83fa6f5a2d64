"""Amazon S3 and S3-compatible stores.

- ``config``: the policy entry (``type: s3``) and declared capabilities; imports no AWS library
- ``storage``: :class:`S3Storage` (imports aioboto3: loaded only when a policy uses S3)
- ``multipart``: streaming multipart uploads with bounded memory
- ``models``: botocore's data files loaded without documentation text (client memory)
"""

from __future__ import annotations

from dbguardian.storage.s3.config import S3_CAPABILITIES, S3StorageConfig

__all__ = ["S3_CAPABILITIES", "S3StorageConfig"]
