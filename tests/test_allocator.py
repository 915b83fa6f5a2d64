"""The allocator setting that keeps a backup's memory flat (dbguardian.allocator), in fresh processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dbguardian.allocator import tune_allocator

# Allocate 16 x 4 MiB with a small live block after each (so the heap cannot just shrink from its
# top), free the big ones, and print how many MiB of RSS that gave back to the system.
SCRIPT = """
import sys
from dbguardian.allocator import tune_allocator

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

if sys.argv[1] == "tuned" and not tune_allocator():
    sys.exit("tune_allocator() failed")
warm = bytearray(16 << 20)
del warm  # untuned, glibc now raises its mmap threshold to 16 MiB: 4 MiB blocks come from the heap
blocks, pins = [], []
for _ in range(16):
    blocks.append(bytearray(4 << 20))
    pins.append(bytearray(2000))
before = rss_kib()
del blocks
print((before - rss_kib()) // 1024)
"""


def freed_mib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_tuned_process_returns_freed_buffers_to_the_system() -> None:
    if not tune_allocator():
        pytest.skip("not glibc")
    assert freed_mib("tuned") >= 60


def test_untuned_glibc_keeps_them_which_is_why_the_setting_exists() -> None:
    if not tune_allocator():
        pytest.skip("not glibc")
    assert freed_mib("untuned") <= 8
