"""The read path's memory bound: a small stored object that decompresses to gigabytes (a decompression
bomb) is read, checksum-verified and decompressed by a separate process whose peak RSS stays under 100 MB.

The zstd bomb is one 4 GiB frame of RLE blocks (what an attacker would write: 4 bytes per 128 KiB,
built instantly); the gzip bomb is 1 GiB of gzip members of zeros back to back (deflate cannot do
better than ~1000:1, and zlib inflates zeros at only ~100-200 MB/s, hence the smaller size).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

EXPANDED = {"zstd": 4 * 1024**3, "gzip": 1024**3}
PEAK_RSS_LIMIT = 100 * 1024 * 1024

CHILD = """
import asyncio, hashlib, json, sys
from pathlib import Path
from dbguardian.pipeline.read import ObjectRef, read_verified
from dbguardian.storage.memory import MemoryStorage

async def main(path, algorithm):
    data = Path(path).read_bytes()
    storage = MemoryStorage("bomb")
    await storage.put_bytes("t/1/dump.pgc", data)
    expected = ObjectRef("t/1/dump.pgc", len(data), hashlib.sha256(data).hexdigest())
    del data
    total = largest = 0
    async for chunk in read_verified(storage, expected, compression=algorithm):
        total += len(chunk)
        largest = max(largest, len(chunk))
    return total, largest

total, largest = asyncio.run(main(sys.argv[1], sys.argv[2]))
status = Path("/proc/self/status").read_text()
peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
print(json.dumps({"total": total, "largest": largest, "peak_rss": peak_kb * 1024}))
"""


def zstd_rle_bomb(size: int) -> bytes:
    """One zstd frame (128 KiB window, no content size, no checksum) of RLE blocks of zero bytes."""
    block = 128 * 1024
    header = struct.pack("<I", 0xFD2FB528) + bytes([0x00, (17 - 10) << 3])
    blocks = []
    for offset in range(0, size, block):
        length = min(block, size - offset)
        last = offset + length >= size
        blocks.append((length << 3 | 1 << 1 | int(last)).to_bytes(3, "little") + b"\0")
    return header + b"".join(blocks)


def gzip_bomb(size: int) -> bytes:
    member_size = 64 * 1024 * 1024
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(16 * 1024 * 1024)
    member = b"".join(compressor.compress(zeros) for _ in range(member_size // len(zeros))) + compressor.flush()
    return member * (size // member_size)


def read_in_child(path: Path, algorithm: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), algorithm], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, int] = json.loads(done.stdout)
    return result


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_a_decompression_bomb_is_read_in_bounded_memory(tmp_path: Path, algorithm: str) -> None:
    expanded = EXPANDED[algorithm]
    bomb = zstd_rle_bomb(expanded) if algorithm == "zstd" else gzip_bomb(expanded)
    assert len(bomb) * 900 < expanded
    path = tmp_path / "bomb"
    path.write_bytes(bomb)

    result = read_in_child(path, algorithm)

    assert result["total"] == expanded
    assert result["largest"] <= 1024 * 1024
    assert result["peak_rss"] <= PEAK_RSS_LIMIT, f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB"


def test_the_zstd_bomb_is_valid_zstd() -> None:
    import zstandard

    bomb = zstd_rle_bomb(3 * 128 * 1024 + 5)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(bomb) == bytes(3 * 128 * 1024 + 5)
    assert len(bomb) < 64  # three RLE blocks: a few bytes expand to 384 KiB
