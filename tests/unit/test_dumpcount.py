"""Row counts read off a pg_dump custom-format stream: synthetic archives of each TOC layout, fed in any split.

The real pg_dump's output is checked against count(*) in tests/integration/test_dump_row_counts.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguardian.pipeline import dumpcount
from dbguardian.pipeline.dumpcount import DumpRowCounter, TableData, scan_python

END_OF_COPY = b"\\.\n\n\n"


def write_int(value: int, size: int = 4) -> bytes:
    return bytes([1 if value < 0 else 0]) + abs(value).to_bytes(size, "little")


def write_str(value: str | None) -> bytes:
    if value is None:
        return write_int(-1)
    raw = value.encode()
    return write_int(len(raw)) + raw


@dataclass
class Entry:
    dump_id: int
    desc: str
    namespace: str | None = "public"
    tag: str = "t"
    rows: list[bytes] | None = None  # COPY rows without their newline (TABLE DATA)
    large_objects: list[bytes] | None = None  # BLOBS
    deps: list[int] = field(default_factory=list)


def archive(entries: list[Entry], *, version: tuple[int, int] = (1, 14), buffered: int = 0, compression: int = 0) -> bytes:
    """A custom-format archive as pg_dump writes it to a pipe (no offsets set).

    ``buffered``: 0 = one chunk per row (pg_dump up to 17), else chunks of that many bytes (newer pg_dump).
    """
    out = bytearray(b"PGDMP" + bytes([version[0], version[1], 0, 4, 8, 1]))
    out += bytes([compression]) if version >= (1, 15) else write_int(compression)
    for value in (1, 2, 3, 4, 5, 126, 0):
        out += write_int(value)
    out += write_str("db") + write_str("15.0") + write_str("15.0")
    out += write_int(len(entries))
    for entry in entries:
        has_data = entry.rows is not None or entry.large_objects is not None
        out += write_int(entry.dump_id) + write_int(1 if has_data else 0)
        out += write_str("1259") + write_str("16384") + write_str(entry.tag) + write_str(entry.desc) + write_int(2)
        out += write_str("") + write_str("") + write_str("COPY x FROM stdin;\n") + write_str(entry.namespace)
        out += write_str("")
        if version >= (1, 14):
            out += write_str("heap")
        if version >= (1, 16):
            out += write_int(ord("r"))
        out += write_str("owner") + write_str("false")
        for dep in entry.deps:
            out += write_str(str(dep))
        out += write_str(None)
        out += bytes([1]) + bytes(8)  # offset not set
    for entry in entries:
        if entry.rows is not None:
            out += bytes([1]) + write_int(entry.dump_id)
            pieces = [row + b"\n" for row in entry.rows] + [END_OF_COPY]
            out += chunked(pieces, buffered)
        elif entry.large_objects is not None:
            out += bytes([3]) + write_int(entry.dump_id)
            for oid, content in enumerate(entry.large_objects, start=16500):
                out += write_int(oid) + chunked([content] if content else [], buffered)
            out += write_int(0)
    return bytes(out)


def chunked(pieces: list[bytes], buffered: int) -> bytes:
    if buffered:
        data = b"".join(pieces)
        pieces = [data[i : i + buffered] for i in range(0, len(data), buffered)]
    return b"".join(write_int(len(piece)) + piece for piece in pieces) + write_int(0)


def count(data: bytes, splits: list[int] | None = None, scanner: dumpcount.Scan | None = None) -> DumpRowCounter:
    counter = DumpRowCounter(scanner)
    cuts = sorted({0, len(data), *(cut for cut in splits or [] if 0 < cut < len(data))})
    for start, end in itertools.pairwise(cuts):
        counter.feed(data[start:end])
    return counter


# COPY text rows: anything but a newline (a value's newline is written as the two bytes \n).
row_text = st.binary(max_size=40).map(lambda raw: raw.replace(b"\n", b"\\n"))
tables = st.lists(st.lists(row_text, max_size=30), min_size=1, max_size=4)


def sample_entries(table_rows: list[list[bytes]], large_objects: list[bytes] | None = None) -> list[Entry]:
    entries = [Entry(1, "ENCODING", None, "ENCODING"), Entry(2, "SCHEMA", None, "shop")]
    for index in range(len(table_rows)):
        entries.append(Entry(10 + index, "TABLE", "shop", f"t{index}"))
    if large_objects is not None:
        entries.append(Entry(90, "BLOBS", None, "BLOBS", large_objects=large_objects))
    for index, rows in enumerate(table_rows):
        entries.append(Entry(100 + index, "TABLE DATA", "shop", f"t{index}", rows=rows, deps=[10 + index]))
    entries.append(Entry(200, "INDEX", "shop", "t0_pkey"))
    return entries


@settings(max_examples=300, deadline=None)
@given(
    table_rows=tables,
    version=st.sampled_from([(1, 12), (1, 13), (1, 14), (1, 15), (1, 16)]),
    buffered=st.sampled_from([0, 1, 7, 4096]),
    large_objects=st.none() | st.lists(st.binary(max_size=50), max_size=3),
    splits=st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
)
def test_counts_every_table_exactly_however_the_stream_is_split(
    table_rows: list[list[bytes]],
    version: tuple[int, int],
    buffered: int,
    large_objects: list[bytes] | None,
    splits: list[int],
) -> None:
    data = archive(sample_entries(table_rows, large_objects), version=version, buffered=buffered)
    expected = {TableData("shop", f"t{index}"): len(rows) for index, rows in enumerate(table_rows)}
    for scanner in (None, scan_python):
        counter = count(data, splits, scanner)
        assert counter.failure is None
        assert counter.counts() == expected
        assert sorted(counter.tables, key=lambda t: t.table) == sorted(expected, key=lambda t: t.table)


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(max_size=200),
    pos=st.integers(min_value=0, max_value=200),
    remaining=st.integers(min_value=0, max_value=300),
    tail=st.integers(min_value=0, max_value=2**64 - 1),
    int_size=st.sampled_from([1, 2, 4, 8]),
)
def test_the_compiled_walker_agrees_with_the_python_one_on_any_bytes(
    data: bytes, pos: int, remaining: int, tail: int, int_size: int
) -> None:
    pos = min(pos, len(data))
    assert dumpcount.scan(data, pos, remaining, tail, int_size) == scan_python(data, pos, remaining, tail, int_size)


def test_the_compiled_walker_is_built() -> None:
    # scripts/bootstrap builds it (setup.py); without it backups fall back to scanning every table.
    assert dumpcount.FAST, "dbguardian/pipeline/_dumpscan.c was not built: is a C compiler installed?"


def test_the_compiled_walker_refuses_positions_outside_the_buffer() -> None:
    with pytest.raises(ValueError, match="out of range"):
        dumpcount.scan(b"abc", 4, 0, 0, 4)
    with pytest.raises(ValueError, match="out of range"):
        dumpcount.scan(b"abc", 0, 0, 0, 9)


def test_a_table_with_rows_of_no_columns_and_an_empty_table() -> None:
    # A table without columns dumps each row as an empty line.
    data = archive(sample_entries([[b""] * 5, []]))
    assert count(data).counts() == {TableData("shop", "t0"): 5, TableData("shop", "t1"): 0}


def test_one_byte_at_a_time() -> None:
    data = archive(sample_entries([[b"1\tx", b"2\ty\\nz"], [b"a" * 300]], [b"blob", b""]), version=(1, 16))
    counter = count(data, list(range(len(data))))
    assert counter.failure is None
    assert counter.counts() == {TableData("shop", "t0"): 2, TableData("shop", "t1"): 1}


def test_a_stream_cut_inside_a_block_counts_only_the_blocks_it_finished() -> None:
    data = archive(sample_entries([[b"1"] * 10, [b"2"] * 10]))
    counter = count(data[:-20])
    assert counter.counts() == {TableData("shop", "t0"): 10}


def test_a_block_without_copys_end_marker_is_not_counted() -> None:
    # Not COPY data as pg_dump writes it: no count rather than a wrong one (the server counts it).
    entries = sample_entries([[b"1", b"2"]])
    data = archive(entries).replace(write_int(len(END_OF_COPY)) + END_OF_COPY, write_int(3) + b"x\ny")
    counter = count(data)
    assert counter.failure is None and counter.counts() == {}


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda data: b"XXXXX" + data[5:], "not a pg_dump custom-format archive"),
        (lambda data: data[:5] + bytes([1, 17]) + data[7:], "archive version 1.17"),
        (lambda data: data[:5] + bytes([1, 11]) + data[7:], "archive version 1.11"),
        (lambda data: data[:10] + bytes([3]) + data[11:], "not a custom-format archive"),
    ],
)
def test_an_archive_it_does_not_know_stops_counting_with_the_reason(mangle: object, reason: str) -> None:
    assert callable(mangle)
    counter = count(mangle(archive(sample_entries([[b"1"]]))))
    assert counter.failure is not None and reason in counter.failure
    assert counter.counts() == {}


def test_compressed_data_is_not_counted() -> None:
    counter = count(archive(sample_entries([[b"1"]]), compression=6))
    assert counter.failure == "the archive's data is compressed (pg_dump --compress=0 expected)"
    counter = count(archive(sample_entries([[b"1"]]), version=(1, 15), compression=1))
    assert counter.failure is not None and "compressed" in counter.failure


def test_an_unknown_block_type_stops_counting_after_the_blocks_before_it() -> None:
    data = archive(sample_entries([[b"1"], [b"2", b"3"]]))
    second_block = bytes([1]) + write_int(101)
    data = data.replace(second_block, bytes([9]) + write_int(101))
    counter = count(data)
    assert counter.failure == "unknown data block type 9"
    assert counter.counts() == {TableData("shop", "t0"): 1}


def test_a_negative_chunk_length_stops_counting() -> None:
    data = archive(sample_entries([[b"1"]]))
    block = bytes([1]) + write_int(100)
    at = data.index(block) + len(block)
    data = data[:at] + write_int(-2) + data[at + 5 :]
    counter = count(data)
    assert counter.failure == "a data block's chunk length is invalid"
    assert counter.counts() == {}


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([(1, 12), (1, 13), (1, 14), (1, 15), (1, 16)]), st.integers(min_value=0, max_value=64))
def test_the_head_length_is_where_the_first_data_block_starts(version: tuple[int, int], buffered: int) -> None:
    entries = sample_entries([[b"1\ta"], [b"2\tb", b"3\tc"]])
    data = archive(entries, version=version, buffered=buffered)
    length = dumpcount.head_length(data)
    assert length is not None and data[length : length + 1] == b"\x01"  # a data block's type byte
    assert dumpcount.head_length(data[:length]) == length  # the TOC alone is a complete head
    assert dumpcount.head_length(data[: length - 1]) is None  # one byte short: need more
    with_no_data = archive([Entry(dump_id=9, desc="SCHEMA", tag="s")], version=version)
    assert dumpcount.head_length(with_no_data) == len(with_no_data)


def test_a_head_this_parser_does_not_know_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a pg_dump custom-format archive"):
        dumpcount.head_length(b"PGDMX" + bytes(100))
    with pytest.raises(ValueError, match="compressed"):
        dumpcount.head_length(archive(sample_entries([[b"1"]]), compression=6))


def test_a_long_toc_in_small_pieces_is_parsed_a_few_times_not_once_per_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [Entry(dump_id=n, desc="TABLE DATA", tag=f"table_{n}", rows=[b"1"]) for n in range(1, 2001)]
    data = archive(entries)
    calls = 0
    parse = DumpRowCounter._parse_head

    def counting(self: DumpRowCounter) -> int | None:
        nonlocal calls
        calls += 1
        return parse(self)

    monkeypatch.setattr(DumpRowCounter, "_parse_head", counting)
    counter = count(data, splits=list(range(100, len(data), 100)))
    assert len(counter.counts()) == 2000 and set(counter.counts().values()) == {1}
    assert calls <= 20, calls  # the head is hundreds of 100-byte pieces: parsed as the buffer doubles


def test_an_archive_that_ends_before_a_parse_was_due_is_still_counted() -> None:
    # Forty one-row tables: the TOC is most of the archive. After the first feed the next parse is due
    # at twice its size, which the whole archive never reaches: counts() parses what it has.
    data = archive([Entry(dump_id=n, desc="TABLE DATA", tag=f"t{n}", rows=[b"x"]) for n in range(1, 41)])
    head = dumpcount.head_length(data)
    assert head is not None and len(data) < 2 * (2 * head // 3)
    counter = DumpRowCounter()
    counter.feed(data[: 2 * head // 3])
    counter.feed(data[2 * head // 3 :])
    assert counter.counts() == {TableData("public", f"t{n}"): 1 for n in range(1, 41)}


def test_a_length_past_ssize_max_is_invalid_in_both_walkers() -> None:
    # Found by hypothesis in CI: 2**63 in an 8-byte length was a 9-exabyte chunk to the Python walker.
    data = b"\x00" + (1 << 63).to_bytes(8, "little")
    assert scan_python(data, 0, 0, 0, 8)[4] == -1
    assert dumpcount.scan(data, 0, 0, 0, 8)[4] == -1
