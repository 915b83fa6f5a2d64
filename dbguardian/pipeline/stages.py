"""Chunk-to-chunk stages, chained by the caller (in the manner of httpx's decoders).

A stage's ``feed(chunk)`` returns the bytes it can emit now (possibly empty) and ``flush()`` the rest
at end of stream. Stages hold at most a bounded working buffer (zstd: its window and job buffers),
never the whole stream.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from typing import Protocol

import zstandard

from dbguardian.errors import PipelineError


class Stage(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class Identity:
    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def flush(self) -> bytes:
        return b""


class ZstdCompress:
    """zstd with worker threads: ``compress()`` hands blocks to zstd's own threads (GIL released)."""

    # zstd's default job for level 3 is several MB per worker, and with incompressible data it holds
    # inputs and outputs of every job in flight: 1 MiB jobs kept peak RSS at ~80 MB instead of ~220 MB
    # on 300 MB of random text, and were faster on 2 CPUs, for the same output size (bench/README.md).
    JOB_SIZE = 1024 * 1024

    def __init__(self, level: int, threads: int = 0, job_size: int = JOB_SIZE) -> None:
        workers = threads or os.cpu_count() or 1
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=workers if workers > 1 else 0, write_checksum=True, job_size=job_size
        )
        self._compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def feed(self, chunk: bytes) -> bytes:
        return bytes(self._compressor.compress(chunk))

    def flush(self) -> bytes:
        return bytes(self._compressor.flush())


class ZstdDecompress:
    def __init__(self) -> None:
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self._fed = False

    def feed(self, chunk: bytes) -> bytes:
        self._fed = True
        try:
            return bytes(self._decompressor.decompress(chunk))
        except zstandard.ZstdError as error:
            raise PipelineError(f"corrupt zstd data: {error}") from None

    def flush(self) -> bytes:
        # A truncated stream leaves the frame unfinished: that is corruption, not a clean end.
        if not self._decompressor.eof:
            raise PipelineError("truncated zstd data: the stream ended inside a frame")
        return b""


class GzipCompress:
    def __init__(self, level: int) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def feed(self, chunk: bytes) -> bytes:
        return self._compressor.compress(chunk)

    def flush(self) -> bytes:
        return self._compressor.flush()


class GzipDecompress:
    """Decodes a gzip stream of one or more members."""

    def __init__(self) -> None:
        self._decompressor = zlib.decompressobj(31)
        self._inside_member = False

    def feed(self, chunk: bytes) -> bytes:
        out = []
        data = chunk
        try:
            while data:
                self._inside_member = True
                out.append(self._decompressor.decompress(data))
                if not self._decompressor.eof:
                    break
                self._inside_member = False
                data = self._decompressor.unused_data
                self._decompressor = zlib.decompressobj(31)
        except zlib.error as error:
            raise PipelineError(f"corrupt gzip data: {error}") from None
        return b"".join(out)

    def flush(self) -> bytes:
        if self._inside_member:
            raise PipelineError("truncated gzip data: the stream ended inside a member")
        return b""


def compressor(algorithm: str, level: int, threads: int = 0) -> Stage:
    if algorithm == "zstd":
        return ZstdCompress(level, threads)
    if algorithm == "gzip":
        return GzipCompress(level)
    if algorithm == "none":
        return Identity()
    raise PipelineError(f"unknown compression algorithm {algorithm!r}")


def decompressor(algorithm: str) -> Stage:
    if algorithm == "zstd":
        return ZstdDecompress()
    if algorithm == "gzip":
        return GzipDecompress()
    if algorithm == "none":
        return Identity()
    raise PipelineError(f"unknown compression algorithm {algorithm!r}")


def file_suffix(algorithm: str) -> str:
    return {"zstd": ".zst", "gzip": ".gz", "none": ""}[algorithm]


class Digest:
    """sha256 and byte count of everything passed through; a tap, not a transform."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
