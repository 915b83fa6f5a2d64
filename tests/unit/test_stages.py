from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.errors import PipelineError
from dbguardian.pipeline.stages import (
    OUTPUT_STEP,
    Digest,
    GzipDecompress,
    Stage,
    ZstdCompress,
    ZstdDecompress,
    compressor,
    decompressor,
    drain,
)
from dbguardian.pipeline.streams import through_stage


def run_stage(stage: Stage, data: bytes, chunk: int) -> bytes:
    out = [piece for i in range(0, len(data), chunk) for piece in drain(stage, data[i : i + chunk])]
    out.append(stage.flush())
    return b"".join(out)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200_000), st.integers(min_value=1, max_value=70_000), st.sampled_from(["zstd", "gzip", "none"]))
def test_round_trip_any_chunking(data: bytes, chunk: int, algorithm: str) -> None:
    packed = run_stage(compressor(algorithm, 3 if algorithm != "none" else 0, threads=2), data, chunk)
    assert run_stage(decompressor(algorithm), packed, max(1, chunk // 3)) == data


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_truncated_stream_is_an_error(algorithm: str) -> None:
    data = os.urandom(50_000) * 4
    packed = run_stage(compressor(algorithm, 3), data, 65536)
    with pytest.raises(PipelineError, match="truncated"):
        run_stage(decompressor(algorithm), packed[: len(packed) // 2], 4096)


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_corrupt_stream_is_an_error(algorithm: str) -> None:
    packed = bytearray(run_stage(compressor(algorithm, 3), b"hello world " * 10_000, 65536))
    packed[len(packed) // 2] ^= 0xFF
    packed[20] ^= 0xFF
    with pytest.raises(PipelineError, match="corrupt"):
        run_stage(decompressor(algorithm), bytes(packed), 4096)


def test_gzip_multi_member() -> None:
    first = run_stage(compressor("gzip", 6), b"first part ", 100)
    second = run_stage(compressor("gzip", 6), b"second part", 100)
    assert run_stage(decompressor("gzip"), first + second, 7) == b"first part second part"


def test_digest_counts_and_hashes() -> None:
    import hashlib

    digest = Digest()
    for piece in (b"abc", b"", b"def"):
        digest.update(piece)
    assert digest.size == 6
    assert digest.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()


def _decoder(algorithm: str, step: int) -> Stage:
    return ZstdDecompress(step) if algorithm == "zstd" else GzipDecompress(step)


def _decode_bounded(stage: Stage, packed: bytes, chunk: int, step: int) -> bytes:
    """Decode as through_stage does, checking that no single call returns more than ``step`` bytes."""
    out: list[bytes] = []
    for i in range(0, len(packed), chunk):
        piece = stage.feed(packed[i : i + chunk])
        while True:
            assert len(piece) <= step
            out.append(piece)
            if not stage.pending:
                break
            piece = stage.more()
    out.append(stage.flush())
    return b"".join(out)


@settings(max_examples=40, deadline=None)
@given(
    st.binary(max_size=20_000).map(lambda tail: b"\0" * 100_000 + tail + b"x" * 50_000),
    st.integers(min_value=1, max_value=30_000),
    st.integers(min_value=1, max_value=70_000),
    st.sampled_from(["zstd", "gzip"]),
)
def test_decompression_output_is_bounded_per_call(data: bytes, chunk: int, step: int, algorithm: str) -> None:
    packed = run_stage(compressor(algorithm, 3), data, 65536)
    assert _decode_bounded(_decoder(algorithm, step), packed, chunk, step) == data


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_a_small_object_expanding_hugely_comes_out_in_steps(algorithm: str) -> None:
    data = b"\0" * 100_000_000
    packed = run_stage(compressor(algorithm, 3), data, 16 * 1024 * 1024)
    assert len(packed) * 100 < len(data)
    stage, total, calls = decompressor(algorithm), 0, 0
    piece = stage.feed(packed)
    while True:
        assert len(piece) <= OUTPUT_STEP
        total, calls = total + len(piece), calls + 1
        if not stage.pending:
            break
        piece = stage.more()
    assert stage.flush() == b""
    assert total == len(data)
    assert calls >= len(data) // OUTPUT_STEP


def test_zstd_concatenated_frames_decode_like_the_zstd_tool() -> None:
    first = run_stage(compressor("zstd", 3), b"first part ", 100)
    second = run_stage(compressor("zstd", 3), b"second part", 100)
    assert run_stage(decompressor("zstd"), first + second, 7) == b"first part second part"
    assert run_stage(decompressor("zstd"), first + second, len(first + second)) == b"first part second part"


@pytest.mark.parametrize("algorithm", ["zstd", "gzip"])
def test_garbage_after_the_last_frame_is_corruption(algorithm: str) -> None:
    packed = run_stage(compressor(algorithm, 3), b"payload " * 1000, 65536)
    with pytest.raises(PipelineError, match="corrupt"):
        run_stage(decompressor(algorithm), packed + b"not a frame at all", 4096)


def test_an_empty_zstd_stream_is_truncated() -> None:
    with pytest.raises(PipelineError, match="truncated"):
        run_stage(decompressor("zstd"), b"", 1)


class ThreadRecorder:
    """Identity that records which thread ran each feed."""

    pending = False

    def __init__(self, quick_feed: bool) -> None:
        self.quick_feed = quick_feed
        self.threads: list[int] = []

    def feed(self, chunk: bytes) -> bytes:
        self.threads.append(threading.get_ident())
        return chunk

    def more(self) -> bytes:
        return b""

    def flush(self) -> bytes:
        return b""


@pytest.mark.parametrize("quick", [True, False])
def test_a_quick_feed_runs_on_the_event_loop_and_any_other_in_a_worker_thread(quick: bool) -> None:
    stage = ThreadRecorder(quick)

    async def run() -> tuple[bytes, int]:
        async def chunks() -> AsyncIterator[bytes]:
            for piece in (b"a", b"b", b"c"):
                yield piece

        out = b"".join([piece async for piece in through_stage(chunks(), stage)])
        return out, threading.get_ident()

    out, loop_thread = asyncio.run(run())
    assert out == b"abc"
    assert (set(stage.threads) == {loop_thread}) is quick


def test_only_stages_that_hand_work_to_threads_of_their_own_feed_on_the_loop() -> None:
    # zstd with workers copies the chunk into its job buffer and returns; one thread compresses in place.
    assert ZstdCompress(3, threads=2).quick_feed and compressor("none", 0).quick_feed
    assert not ZstdCompress(3, threads=1).quick_feed and not compressor("gzip", 6).quick_feed
    assert not any(decompressor(algorithm).quick_feed for algorithm in ("zstd", "gzip"))
