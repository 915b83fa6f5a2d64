"""Keep the memory of S3 uploads flat: fix glibc malloc's mmap threshold.

A backup to S3 moves a stream of 1 MiB chunks and 5+ MiB upload parts through several threads (pipe
readers, compression and file-write workers, aiohttp's body readers). glibc serves allocations
above ``M_MMAP_THRESHOLD`` (128 KiB at start) with their own mmap, returned to the system on free,
but it raises the threshold to the size of every such block that is freed (up to 32 MiB), and the
trim threshold with it. After the first freed part, parts and chunks come from the per-thread
arenas instead, and the freed space stays there: measured on a local + S3 + age backup of 1.3 GB
of incompressible data, 40 MB of such free-but-kept memory, peak RSS 137 MB instead of 121 MB
(bench/README.md). Setting the threshold explicitly turns the adjustment off: blocks of 2 MiB and
more (parts, zstd's buffers) are mapped and unmapped, and the 1 MiB chunks, below it, keep being
reused from the arenas (a threshold under 1 MiB saved ~3 MB more but cost page faults per chunk).

Only processes that open an object store set it (the S3, GCS and Azure factories in ``storage/registry.py``;
bench/storage_bench.py: 14 MB less peak RSS for S3 on SeaweedFS, a few MB for GCS): without parts, the
adaptive threshold costs ~10 MB (79 vs 69 MB peak on the same data) but the fixed one, which also
pins the trim threshold at 128 KiB, cost ~4 % time in trimming and re-faulting the heap.
"""

from __future__ import annotations

import ctypes
import functools

M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
MMAP_THRESHOLD = 2 * 1024 * 1024


@functools.cache
def tune_allocator(threshold: int = MMAP_THRESHOLD) -> bool:
    """Set glibc's mmap threshold (and so stop its dynamic adjustment); False without glibc."""
    try:
        # The process's own symbols include libc's (no find_library: it runs ldconfig).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: musl, for one, has no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
