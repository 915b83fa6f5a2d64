"""Azure Blob Storage (and the Azurite emulator).

- ``config``: the policy entry (``type: azure``) and declared capabilities; imports no Azure library
- ``storage``: :class:`AzureStorage` (imports azure-storage-blob: loaded only when a policy uses Azure)
- ``blocks``: streaming block-blob uploads (Put Block + Put Block List) with bounded memory
"""

from __future__ import annotations

from dbguardian.storage.azure.config import AZURE_CAPABILITIES, AzureStorageConfig

__all__ = ["AZURE_CAPABILITIES", "AzureStorageConfig"]
