"""Azure fixtures: one Azurite blob service per session (real HTTP on a free loopback port), a fresh
container per test.

Azurite comes from npm (tests/emulators/package.json, installed by scripts/bootstrap with ``npm ci``).
It is started with its well-known development account, whose key is public (Microsoft documents it
for the emulator); the storage reads it from a connection-string file, like a real deployment.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from dbguardian.storage.azure.config import AzureStorageConfig
from dbguardian.storage.azure.storage import AzureStorage
from tests.support.processes import background, wait_until_up

AZURITE = Path(__file__).resolve().parents[1] / "emulators" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURE_PREFIX = "pre/fix"


@dataclass
class Azurite:
    url: str
    """The account's blob endpoint, ``http://127.0.0.1:<port>/devstoreaccount1``."""
    connection_string_file: Path
    process: subprocess.Popen[bytes]

    def connection_string(self, endpoint: str | None = None) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={endpoint or self.url};"
        )

    def client(self) -> BlobServiceClient:
        """A plain (synchronous) client for looking behind the storage's back."""
        return BlobServiceClient.from_connection_string(self.connection_string(), retry_total=0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def run_azurite(base: Path) -> Iterator[Azurite]:
    """Azurite's blob service on a free loopback port, its data and log under ``base``, stopped on exit
    (also used by bench/storage_bench.py)."""
    port = _free_port()
    argv = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(base / "data"),
            "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl", "--disableTelemetry", "--silent"]  # fmt: skip
    with background(argv, log=base / "azurite.log", cwd=base) as process:
        connection_string_file = base / "connection-string"
        server = Azurite(f"http://127.0.0.1:{port}/{ACCOUNT}", connection_string_file, process)
        connection_string_file.write_text(server.connection_string() + "\n")
        connection_string_file.chmod(0o600)
        wait_until_up(process, lambda: list(server.client().list_containers()), what="Azurite",
                      log=base / "azurite.log", timeout=60)  # fmt: skip
        yield server


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    if not AZURITE.is_file():
        pytest.fail(f"Azurite is not installed ({AZURITE} missing): run scripts/bootstrap (needs node and npm)")
    with run_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def azure_container(azurite: Azurite) -> Iterator[str]:
    name = f"t-{secrets.token_hex(6)}"
    service = azurite.client()
    service.create_container(name)
    yield name
    service.delete_container(name)  # uncommitted blobs and all: Azurite frees the space


AzureFactory = Callable[..., AzureStorage]


@pytest.fixture
def make_azure(azurite: Azurite, azure_container: str) -> AzureFactory:
    """``make_azure(**config overrides, backoff_base=..., name=...)`` on this test's container."""

    def make(*, backoff_base: float = 0.01, name: str = "azure", credential: Any = None, **overrides: Any) -> AzureStorage:
        fields: dict[str, Any] = {
            "type": "azure",
            "container": azure_container,
            "prefix": AZURE_PREFIX,
            "connection_string_file": azurite.connection_string_file,
            "block_size": 1024 * 1024,
            "retries": 1,
        }
        fields.update(overrides)
        return AzureStorage(name, AzureStorageConfig(**fields), backoff_base=backoff_base, credential=credential)

    return make
