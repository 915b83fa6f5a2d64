"""Exact per-table row counts read off pg_dump's own output, in the same pass that stores it.

A custom-format archive written with ``--compress=0`` is: a header, the table of contents (TOC:
one entry per object, ``TABLE DATA`` entries naming each table's schema and name), then one data
block per ``TABLE DATA`` entry: a type byte, the entry's dump id, and the COPY text as
length-prefixed chunks ending in a zero length (pg_backup_custom.c, pg_backup_archiver.c). COPY's
text format ends every row in exactly one newline (newlines inside values are written as ``\\n``)
and the block's data ends in the end-of-copy marker ``\\.`` plus two blank lines. So a block's row
count is its newline count minus three, whether pg_dump wrote one chunk per row (up to 17) or
buffered them (newer releases).

These counts are of the rows pg_dump actually wrote, i.e. of its snapshot, and cost no second scan
of every table on the server (before, ``count(*)`` per table in the exported snapshot: on pgbench
scale 100 that was ~0.9 CPU-s of the server's, beside pg_dump and zstd on two CPUs). The walk over
chunks runs in C (``_dumpscan.c``); :func:`scan_python` is the same walk in Python, the reference
the tests hold the C version to and the fallback if it was not built (too slow for big tables:
:data:`FAST` tells the caller to count with the server instead).

Anything unexpected (an unknown archive version or block type, a block without the end marker)
makes :meth:`DumpRowCounter.counts` leave those tables out; the caller counts them on the server.
Nothing here ever fails the backup: the archive itself is checked by pg_restore at restore time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ScanResult = tuple[int, int, int, int, int]
"""(pos, remaining, newlines, tail, state): see :func:`scan_python`."""

MAGIC = b"PGDMP"
BLOCK_DATA = 1
BLOCK_LARGE_OBJECTS = 3
END_OF_COPY = int.from_bytes(b"\\.\n\n\n", "big")
"""The last five bytes of every table's COPY data, as they sit in the low bytes of ``tail``."""
END_OF_COPY_NEWLINES = 3
MIN_VERSION = (1, 12)
MAX_VERSION = (1, 16)
"""Archive versions whose TOC layout this parser knows (PostgreSQL 9.0 to 18)."""
_TAIL_MASK = (1 << 64) - 1


def scan_python(data: bytes | bytearray | memoryview, pos: int, remaining: int, tail: int, int_size: int) -> ScanResult:
    """Walk one data block's chunks from ``pos``; the same contract as ``_dumpscan.scan``.

    ``remaining``: bytes of the current chunk still to come (0: ``pos`` is at a chunk header).
    ``tail``: the block's last eight data bytes so far. Returns where it stopped and the newlines
    counted; state 0 = out of data (inside a chunk or a header), 1 = the block's end marker was
    read (``pos`` is after it), -1 = not a valid chunk length.
    """
    size = len(data)
    newlines = 0
    while True:
        if remaining > 0:
            take = min(remaining, size - pos)
            piece = bytes(data[pos : pos + take])
            newlines += piece.count(b"\n")
            for byte in piece[-8:]:
                tail = ((tail << 8) | byte) & _TAIL_MASK
            pos += take
            remaining -= take
            if remaining > 0:
                return pos, remaining, newlines, tail, 0
        if size - pos < 1 + int_size:
            return pos, remaining, newlines, tail, 0
        sign = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 1 + int_size], "little")
        if sign != 0 or length > sys.maxsize:  # negative, or past what the compiled walker can hold
            return pos, remaining, newlines, tail, -1
        pos += 1 + int_size
        if length == 0:
            return pos, remaining, newlines, tail, 1
        remaining = length


Scan = Callable[[bytes | bytearray | memoryview, int, int, int, int], ScanResult]

try:
    from dbguardian.pipeline._dumpscan import scan as _compiled_scan
except ImportError:  # built without a C compiler: setup.py marks the extension optional
    FAST = False
    scan: Scan = scan_python
else:
    FAST = True
    scan = _compiled_scan


class _NeedMore(Exception):
    """The buffered bytes end before the structure being read."""


class _Reader:
    def __init__(self, data: bytes | bytearray, pos: int = 0, int_size: int = 4) -> None:
        self.data = data
        self.pos = pos
        self.int_size = int_size

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _NeedMore
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise _NeedMore
        value = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return value

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def str(self) -> str | None:
        length = self.int()
        if length < 0:
            return None
        return self.take(length).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class TableData:
    schema: str
    table: str


class _Unsupported(Exception):
    """Not an archive this parser knows; counting stops, the backup goes on."""


def head_length(data: bytes | bytearray) -> int | None:
    """How many bytes the header and TOC of the custom-format archive at the start of ``data`` take
    (where its data section starts); None when ``data`` ends inside them. Raises ``ValueError`` for
    anything this parser does not know (another format, version, or compressed data)."""
    counter = DumpRowCounter()
    counter._head = bytearray(data)
    try:
        return counter._parse_head()
    except _Unsupported as error:
        raise ValueError(str(error)) from None


class DumpRowCounter:
    """Feed it the archive's bytes in order (:meth:`feed`); then :meth:`counts` has the rows per table."""

    def __init__(self, scanner: Scan | None = None) -> None:
        self._scan = scanner or scan
        self._head = bytearray()  # header + TOC, until parsed
        # Parsed again from the start only once the buffer has doubled: a TOC of many MB (a schema of
        # 100,000 tables) arrives in many chunks, and parsing after each would be quadratic.
        self._parse_at = 0
        self._int_size = 4
        self._offset_size = 8
        self._tables: dict[int, TableData] = {}
        self._in_toc = True
        # Data section state: between blocks, inside a block's chunks, or in large objects.
        self._carry = b""  # bytes of a block or chunk header split across two feeds
        self._expect: Literal["block", "oid", "chunks"] = "block"
        self._block: int | None = None  # dump id of the data block being walked (None: a large object)
        self._remaining = 0
        self._newlines = 0
        self._tail = 0
        self._rows: dict[int, int] = {}
        self.failure: str | None = None
        """Why counting stopped early (then only the blocks read before are counted)."""

    def feed(self, chunk: bytes) -> None:
        if self.failure is not None or not chunk:
            return
        try:
            if self._in_toc:
                self._head += chunk
                if len(self._head) >= self._parse_at:
                    self._leave_toc()
            else:
                self._walk(chunk)
        except _Unsupported as error:
            self.failure = str(error)

    def counts(self) -> dict[TableData, int]:
        """Rows per table whose whole data block was read and ended as COPY data ends."""
        if self._in_toc and self._head and self.failure is None:  # the stream ended before a parse was due
            try:
                self._leave_toc()
            except _Unsupported as error:
                self.failure = str(error)
        return {self._tables[dump_id]: rows for dump_id, rows in self._rows.items()}

    def _leave_toc(self) -> None:
        """Parse the buffered header and TOC; once they are complete, walk the data buffered after them."""
        start = self._parse_head()
        if start is None:
            self._parse_at = 2 * len(self._head)
            return
        data = bytes(self._head[start:])
        self._head = bytearray()
        self._in_toc = False
        self._walk(data)

    @property
    def tables(self) -> list[TableData]:
        """Every table the archive has data for (from its TOC)."""
        return list(self._tables.values())

    def _parse_head(self) -> int | None:
        """Parse header and TOC from the buffered bytes; where the data section starts, or None: need more."""
        reader = _Reader(self._head)
        try:
            if reader.take(5) != MAGIC:
                raise _Unsupported("not a pg_dump custom-format archive")
            version = (reader.byte(), reader.byte())
            reader.byte()  # revision
            if not MIN_VERSION <= version <= MAX_VERSION:
                raise _Unsupported(f"archive version {version[0]}.{version[1]} is not one this parser knows")
            self._int_size = reader.int_size = reader.byte()
            self._offset_size = reader.byte()
            if reader.byte() != 1:  # archCustom
                raise _Unsupported("not a custom-format archive")
            compression = reader.byte() if version >= (1, 15) else reader.int()
            if compression != 0:
                raise _Unsupported("the archive's data is compressed (pg_dump --compress=0 expected)")
            for _ in range(7):  # creation time
                reader.int()
            for _ in range(3):  # database name, server and pg_dump versions
                reader.str()
            self._read_toc(reader, version)
        except _NeedMore:
            return None
        return reader.pos

    def _read_toc(self, reader: _Reader, version: tuple[int, int]) -> None:
        self._tables = {}
        for _ in range(reader.int()):
            dump_id = reader.int()
            had_dumper = reader.int()
            reader.str()  # table oid
            reader.str()  # oid
            tag = reader.str()
            desc = reader.str()
            reader.int()  # section
            for _ in range(3):  # definition, drop statement, copy statement
                reader.str()
            namespace = reader.str()
            reader.str()  # tablespace
            if version >= (1, 14):
                reader.str()  # table access method
            if version >= (1, 16):
                reader.int()  # relkind
            reader.str()  # owner
            reader.str()  # "with oids": always false
            while reader.str() is not None:  # dependencies
                pass
            reader.byte()  # data offset: a flag ...
            reader.take(self._offset_size)  # ... and the offset
            if desc == "TABLE DATA" and had_dumper and tag is not None and namespace is not None:
                self._tables[dump_id] = TableData(namespace, tag)

    def _walk(self, data: bytes) -> None:
        if self._carry:
            data = self._carry + data
            self._carry = b""
        pos = 0
        while 0 <= pos < len(data):
            if self._expect == "block":
                pos = self._start_block(data, pos)
            elif self._expect == "oid":
                pos = self._next_large_object(data, pos)
            else:
                pos = self._walk_chunks(data, pos)

    def _wait(self, data: bytes, pos: int) -> int:
        """Keep the bytes from ``pos`` (a header split across feeds) for the next feed."""
        self._carry = data[pos:]
        return -1

    def _start_block(self, data: bytes, pos: int) -> int:
        """Read a block's type and dump id at ``pos``; where its content starts, or -1: wait for more."""
        if len(data) - pos < 2 + self._int_size:
            return self._wait(data, pos)
        kind = data[pos]
        reader = _Reader(data, pos + 1, self._int_size)
        dump_id = reader.int()
        if kind == BLOCK_DATA:
            self._block = dump_id
            self._expect = "chunks"
        elif kind == BLOCK_LARGE_OBJECTS:
            # Each large object: its oid, then chunks to a zero length; a zero oid ends the block.
            self._block = None
            self._expect = "oid"
        else:
            raise _Unsupported(f"unknown data block type {kind}")
        self._remaining = 0
        self._newlines = 0
        self._tail = 0
        return reader.pos

    def _next_large_object(self, data: bytes, pos: int) -> int:
        if len(data) - pos < 1 + self._int_size:
            return self._wait(data, pos)
        oid = _Reader(data, pos, self._int_size).int()
        self._expect = "block" if oid == 0 else "chunks"
        self._remaining = 0
        return pos + 1 + self._int_size

    def _walk_chunks(self, data: bytes, pos: int) -> int:
        pos, self._remaining, newlines, self._tail, state = self._scan(
            data, pos, self._remaining, self._tail, self._int_size
        )
        self._newlines += newlines
        if state == -1:
            raise _Unsupported("a data block's chunk length is invalid")
        if state == 0:
            return self._wait(data, pos) if pos < len(data) else -1
        if self._block is None:  # one large object done: the next oid follows
            self._expect = "oid"
            return pos
        if self._block in self._tables and self._tail & 0xFFFFFFFFFF == END_OF_COPY:
            self._rows[self._block] = self._newlines - END_OF_COPY_NEWLINES
        self._block = None
        self._expect = "block"
        return pos
