"""``Child.stdout_chunks``: every byte a program writes, in order, in few large chunks.

Real programs write to the pipe (a short Python script started with this interpreter): the reader
naps until the pipe holds half a chunk, so the tests check what that must never change (all data,
in order, EOF, a chunk never over ``size``) and what it is for (many small writes arrive as few chunks).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import sys
import time

from dbguardian.pipeline import process
from dbguardian.pipeline.process import Child

# Writes COUNT pieces of SIZE bytes (a seeded pseudo-random stream) with SLEEP seconds between them.
WRITER = """
import os, random, sys, time
count, size, sleep = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rng = random.Random(7)
for _ in range(count):
    os.write(1, rng.randbytes(size))
    if sleep:
        time.sleep(sleep)
"""


def expected(count: int, size: int) -> bytes:
    import random

    rng = random.Random(7)
    return b"".join(rng.randbytes(size) for _ in range(count))


def read_all(count: int, size: int, sleep: float, *, chunk: int = 1024 * 1024) -> list[bytes]:
    async def run() -> list[bytes]:
        argv = [sys.executable, "-c", WRITER, str(count), str(size), str(sleep)]
        async with Child(argv) as child:
            chunks = [piece async for piece in child.stdout_chunks(chunk)]
            await child.wait_checked()
        return chunks

    return asyncio.run(run())


def test_many_small_writes_arrive_whole_in_order_and_in_few_chunks() -> None:
    # 16 MiB in 4 kB writes, as pg_dump writes: 4096 writes.
    chunks = read_all(4096, 4096, 0)
    data = b"".join(chunks)
    assert hashlib.sha256(data).digest() == hashlib.sha256(expected(4096, 4096)).digest()
    assert all(0 < len(piece) <= 1024 * 1024 for piece in chunks)
    # Without the naps a fast reader takes about one chunk per write; with them, half a MiB or more.
    assert len(chunks) <= 40, [len(piece) for piece in chunks]


def read_syscalls() -> int:
    """This process's read-family system calls so far (all threads)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscr:"))


def test_a_writer_slower_than_the_reader_is_read_in_few_large_reads() -> None:
    # What the naps are for: pg_dump writes 4 kB at a time, usually slower than the reader reads. A
    # reader blocked on the empty pipe would wake and read once per write (2,000 reads here).
    before = read_syscalls()
    chunks = read_all(2000, 4096, 0.0002)
    reads = read_syscalls() - before
    assert b"".join(chunks) == expected(2000, 4096)
    assert reads < 500, reads


def test_a_slow_writer_is_read_completely_and_the_end_is_seen() -> None:
    chunks = read_all(20, 1000, 0.01)
    assert b"".join(chunks) == expected(20, 1000)


def test_a_chunk_is_never_larger_than_asked() -> None:
    chunks = read_all(64, 65536, 0, chunk=100_000)
    assert b"".join(chunks) == expected(64, 65536)
    assert max(len(piece) for piece in chunks) <= 100_000


def test_no_output_is_an_empty_stream() -> None:
    assert read_all(0, 1, 0) == []


def test_the_fill_wait_returns_at_once_when_the_writer_is_gone() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"x" * 10)
    os.close(write_end)
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    try:
        started = time.monotonic()
        process._wait_for_fill(read_end, 1 << 20, poller)
        assert time.monotonic() - started < process.FILL_STEP * 2
        assert process._pipe_bytes(read_end) == 10
    finally:
        os.close(read_end)
