"""The allocator setting that keeps S3 upload memory flat (dbguardian.allocator), in fresh processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dbguardian.allocator import tune_allocator

# After a 16 MiB block is freed (untuned glibc then raises its mmap threshold to 16 MiB), allocate
# 16 x 4 MiB: print how many MiB of them glibc mapped on their own (mallinfo2's hblkhd), then free
# them and print how many MiB of RSS that gave back. Heap-served blocks may or may not be trimmed
# (that depends on the heap's layout), mapped ones always go back.
SCRIPT = """
import ctypes, sys
from dbguardian.allocator import tune_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

if sys.argv[1] == "tuned" and not tune_allocator():
    sys.exit("tune_allocator() failed")
warm = bytearray(16 << 20)
del warm
mapped_before = libc.mallinfo2().hblkhd
blocks = [bytearray(4 << 20) for _ in range(16)]
mapped = (libc.mallinfo2().hblkhd - mapped_before) >> 20
before = rss_kib()
del blocks
print(mapped, (before - rss_kib()) // 1024)
"""


def run(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    mapped, freed = out.stdout.split()
    return int(mapped), int(freed)


@pytest.fixture(autouse=True)
def _glibc_only() -> None:
    if not tune_allocator():
        pytest.skip("not glibc")


def test_tuned_process_maps_big_buffers_and_returns_them_when_freed() -> None:
    mapped, freed = run("tuned")
    assert mapped >= 64
    assert freed >= 60


def test_untuned_glibc_serves_them_from_the_heap_which_is_why_the_setting_exists() -> None:
    mapped, _freed = run("untuned")
    assert mapped == 0
