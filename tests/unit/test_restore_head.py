"""restore.pg_restore's split restore: the archive's header and TOC are found in a stream without
losing or repeating a byte of it, and in a spooled file; an archive it cannot parse is restored whole."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.pipeline import dumpcount
from dbguardian.restore import pg_restore
from dbguardian.restore.pg_restore import _head
from tests.unit.test_dumpcount import Entry, archive, sample_entries

DATA = archive(sample_entries([[b"%d\trow" % n for n in range(500)], [b"x"] * 300], large_objects=[b"blob"]))


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def head_and_rest(chunks: list[bytes]) -> tuple[bytes | None, bytes]:
    async def run() -> tuple[bytes | None, bytes]:
        head, source = await _head(stream(chunks))
        assert not isinstance(source, Path)
        return head, b"".join([chunk async for chunk in source])

    return asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=12))
def test_a_stream_gives_its_head_and_then_every_byte_once(cuts: list[int]) -> None:
    head, rest = head_and_rest(pieces(DATA, cuts))
    assert rest == DATA
    assert head == DATA[: dumpcount.head_length(DATA)]


def test_a_stream_that_is_not_a_custom_archive_is_passed_on_whole() -> None:
    data = b"-- plain SQL\n" * 1000
    head, rest = head_and_rest(pieces(data, [100, 5000]))
    assert head is None and rest == data


def test_a_spooled_file_gives_its_head(tmp_path: Path) -> None:
    spooled = tmp_path / "restore.pgc"
    spooled.write_bytes(DATA)
    head, source = asyncio.run(_head(spooled))
    assert head == DATA[: dumpcount.head_length(DATA)] and source == spooled
    spooled.write_bytes(b"PGDMX" + bytes(10))
    assert asyncio.run(_head(spooled))[0] is None


def test_a_long_toc_in_small_pieces_is_parsed_as_the_buffer_doubles(monkeypatch: pytest.MonkeyPatch) -> None:
    data = archive([Entry(dump_id=n, desc="TABLE DATA", tag=f"table_{n}", rows=[b"1"]) for n in range(1, 2001)])
    calls = 0

    def counting(buffer: bytes | bytearray) -> int | None:
        nonlocal calls
        calls += 1
        return dumpcount.head_length(buffer)

    monkeypatch.setattr(pg_restore, "head_length", counting)
    head, rest = head_and_rest(pieces(data, list(range(100, len(data), 100))))
    assert head == data[: dumpcount.head_length(data)] and rest == data
    assert calls <= 20, calls
