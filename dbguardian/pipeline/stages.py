"""Chunk-to-chunk stages, chained by the caller (in the manner of httpx's decoders).

A stage's ``feed(chunk)`` takes the next input chunk and returns the output it can emit now
(possibly empty). While ``pending`` is true, ``more()`` returns further output owed for input
already fed; ``flush()`` returns the rest at end of stream. Every call returns at most
``OUTPUT_STEP`` bytes for decompressors, so a small object that expands to gigabytes (a
decompression bomb, or just very repetitive data) never sits in memory at once. Stages hold at most
a bounded working buffer (zstd: its window and job buffers), never the whole stream.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zlib
from typing import Protocol

import zstandard

from dbguardian.errors import PipelineError

if sys.version_info >= (3, 14):
    from compression import zstd as zstd_stream
else:
    from backports import zstd as zstd_stream

OUTPUT_STEP = 1024 * 1024
"""The most a decompressor returns per call: one pipe chunk's worth."""


class Stage(Protocol):
    @property
    def pending(self) -> bool:
        """True while ``more()`` may return output for input already fed."""
        ...

    @property
    def quick_feed(self) -> bool:
        """True when ``feed()`` only hands the chunk to the stage's own threads (or does no work): the
        caller may call it on the event loop instead of sending it to a worker thread."""
        ...

    def feed(self, chunk: bytes) -> bytes: ...

    def more(self) -> bytes: ...

    def flush(self) -> bytes: ...


class Identity:
    pending = False
    quick_feed = True

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def more(self) -> bytes:
        return b""

    def flush(self) -> bytes:
        return b""


class ZstdCompress:
    """zstd with worker threads: ``compress()`` hands blocks to zstd's own threads (GIL released)."""

    # zstd's default job for level 3 is several MB per worker, and with incompressible data it holds
    # inputs and outputs of every job in flight: 1 MiB jobs kept peak RSS at ~80 MB instead of ~220 MB
    # on 300 MB of random text, and were faster on 2 CPUs, for the same output size (bench/README.md).
    JOB_SIZE = 1024 * 1024
    pending = False
    quick_feed = False

    def __init__(self, level: int, threads: int = 0, job_size: int = JOB_SIZE) -> None:
        workers = threads or os.cpu_count() or 1
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=workers if workers > 1 else 0, write_checksum=True, job_size=job_size
        )
        self._compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
        # With worker threads, compress() copies the chunk into zstd's job buffer and returns (it waits,
        # GIL released, only while every job is busy): a round trip through a Python worker thread
        # for each 1 MiB chunk cost more than the call (issue 14). Without them it compresses in place.
        self.quick_feed = workers > 1

    def feed(self, chunk: bytes) -> bytes:
        # Compression output is bounded by its input plus the jobs in flight: one call per chunk.
        out: bytes = self._compressor.compress(chunk)
        return out

    def more(self) -> bytes:
        return b""

    def flush(self) -> bytes:
        out: bytes = self._compressor.flush()
        return out


class ZstdDecompress:
    """Decodes one or more concatenated zstd frames, at most ``OUTPUT_STEP`` bytes per call."""

    quick_feed = False

    def __init__(self, step: int = OUTPUT_STEP) -> None:
        self._step = step
        self._decoder = zstd_stream.ZstdDecompressor()
        self._inside_frame = False
        self._frames = 0
        self._next_frame = b""  # input after a finished frame, not yet given to a decoder

    @property
    def pending(self) -> bool:
        return bool(self._next_frame) or not self._decoder.needs_input

    def feed(self, chunk: bytes) -> bytes:
        return self._decode(chunk)

    def more(self) -> bytes:
        data, self._next_frame = self._next_frame, b""
        return self._decode(data)

    def _decode(self, data: bytes) -> bytes:
        try:
            while True:
                if data:
                    self._inside_frame = True
                out = self._decoder.decompress(data, self._step)
                data = b""
                if self._decoder.eof:
                    self._frames += 1
                    self._inside_frame = False
                    data = self._decoder.unused_data
                    self._decoder = zstd_stream.ZstdDecompressor()
                    if out and data:
                        self._next_frame = data  # the next call starts the next frame
                        return out
                # Empty output while input remains (a skippable frame, a header) is no answer yet.
                if out or (not data and self._decoder.needs_input):
                    return out
        except zstd_stream.ZstdError as error:
            raise PipelineError(f"corrupt zstd data: {error}") from None

    def flush(self) -> bytes:
        # A truncated stream leaves the frame unfinished: that is corruption, not a clean end.
        if self._inside_frame or not self._frames:
            raise PipelineError("truncated zstd data: the stream ended inside a frame")
        return b""


class GzipCompress:
    pending = False
    quick_feed = False

    def __init__(self, level: int) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 31)

    def feed(self, chunk: bytes) -> bytes:
        return self._compressor.compress(chunk)

    def more(self) -> bytes:
        return b""

    def flush(self) -> bytes:
        return self._compressor.flush()


class GzipDecompress:
    """Decodes a gzip stream of one or more members, at most ``OUTPUT_STEP`` bytes per call."""

    quick_feed = False

    def __init__(self, step: int = OUTPUT_STEP) -> None:
        self._step = step
        self._decompressor = zlib.decompressobj(31)
        self._inside_member = False
        self._input = b""  # fed but not yet consumed (zlib's unconsumed tail, or the next member)
        self._full = False  # the last call hit the limit: zlib may hold output for input it consumed

    @property
    def pending(self) -> bool:
        return self._full or bool(self._input)

    def feed(self, chunk: bytes) -> bytes:
        return self._decode(chunk)

    def more(self) -> bytes:
        data, self._input = self._input, b""
        return self._decode(data)

    def _decode(self, data: bytes) -> bytes:
        try:
            while True:
                if data:
                    self._inside_member = True
                out = self._decompressor.decompress(data, self._step)
                data = self._decompressor.unconsumed_tail
                self._full = len(out) == self._step
                if self._decompressor.eof:
                    self._inside_member = self._full = False
                    data = self._decompressor.unused_data
                    self._decompressor = zlib.decompressobj(31)
                if out or not data:
                    self._input = data
                    return out
        except zlib.error as error:
            raise PipelineError(f"corrupt gzip data: {error}") from None

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


def drain(stage: Stage, chunk: bytes) -> list[bytes]:
    """Everything a stage emits for ``chunk`` (for small inputs and tests: not bounded in total)."""
    out = [stage.feed(chunk)]
    while stage.pending:
        out.append(stage.more())
    return [piece for piece in out if piece]


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
