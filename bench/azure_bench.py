"""A direct streamed write of N MB of incompressible data through the Azure storage API, against Azurite.

    .venv/bin/python bench/azure_bench.py [--mb 200] [--block-size 4MiB] [--max-inflight-blocks 2] [--runs 1]

Starts Azurite's blob service (tests/emulators, installed by scripts/bootstrap) on a free loopback port
with its data under a temp dir, then, in this process, writes the data in 1 MiB pieces (fresh os.urandom
each, as a pipeline stage would hand them over) with ``AzureStorage.open_writer`` → ``write`` →
``commit`` (Put Block with Content-MD5, Put Block List) and checks the size. Prints one JSON line per
run: seconds of the write, the process's RSS before the write (interpreter, imports, one client) and
its peak RSS (``ru_maxrss``, the whole process so far). Azurite's own memory and CPU are not counted
(its process) but it shares the machine (node writes every block to its extent files), so the time
is an upper bound of the client's. Not a backup: no pg_dump, compression or encryption.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dbguardian.allocator import tune_allocator
from dbguardian.storage.azure.config import AzureStorageConfig
from dbguardian.storage.azure.storage import AzureStorage
from dbguardian.units import parse_size
from tests.storage.azure_fixtures import ACCOUNT, ACCOUNT_KEY, AZURITE, _free_port

MiB = 1024 * 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one_run(connection_string_file: Path, mb: int, block_size: int, inflight: int) -> dict[str, float | int]:
    container = f"bench-{secrets.token_hex(4)}"
    config = AzureStorageConfig(type="azure", container=container, prefix="bench", block_size=block_size,
                                max_inflight_blocks=inflight, connection_string_file=connection_string_file)  # fmt: skip
    storage = AzureStorage("azure", config)
    async with storage.service() as service:
        await service.create_container(container)
    await storage.put_bytes("warm/x", b"x")  # imports, first connection
    before = rss_mb()
    start = time.perf_counter()
    writer = await storage.open_writer("bench/dump")
    for _ in range(mb):
        await writer.write(os.urandom(MiB))
    info = await writer.commit()
    seconds = time.perf_counter() - start
    peak = peak_mb()
    assert info.size == mb * MiB and (await storage.stat("bench/dump")).size == mb * MiB
    async with storage.service() as service:
        await service.delete_container(container)
    return {"mb": mb, "block_size": block_size, "max_inflight_blocks": inflight, "seconds": round(seconds, 2),
            "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
            "mb_per_s": round(mb / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--block-size", default="4MiB")
    parser.add_argument("--max-inflight-blocks", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if not AZURITE.is_file():
        sys.exit(f"Azurite is not installed ({AZURITE}): run scripts/bootstrap")
    tune_allocator()  # as the registry's factory does for multi-MiB blocks
    port = _free_port()
    with tempfile.TemporaryDirectory() as base:
        argv = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", f"{base}/data",
                "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl", "--disableTelemetry",
                "--silent"]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        connection_string_file = Path(base) / "connection-string"
        connection_string_file.write_text(f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                                          f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")  # fmt: skip
        try:
            time.sleep(0.5)
            for _ in range(100):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    time.sleep(0.1)
            for _ in range(args.runs):
                result = asyncio.run(one_run(connection_string_file, args.mb, parse_size(args.block_size),
                                             args.max_inflight_blocks))  # fmt: skip
                print(json.dumps(result), flush=True)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()


if __name__ == "__main__":
    main()
