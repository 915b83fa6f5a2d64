from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.errors import PipelineError
from dbguardian.pipeline.stages import Digest, Stage, compressor, decompressor


def run_stage(stage: Stage, data: bytes, chunk: int) -> bytes:
    out = [stage.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)]
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
