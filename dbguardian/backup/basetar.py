"""A base backup's tar stream as pg_basebackup writes it (``-D - -Ft``), read as it goes by, and where
the backup lies in the WAL (start and stop LSN, timeline, the segments it needs): pure, no I/O.
:mod:`dbguardian.backup.physical` feeds it the stream."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dbguardian.catalog.wal import format_lsn, parse_lsn, required_segments, segment_of_lsn

BLOCK = 512

# ----------------------------------------------------------------------------- pure: the tar stream


def _tar_number(field_bytes: bytes) -> int:
    """A tar header number: octal text, or base-256 (first byte 0x80) for sizes past 8 GiB."""
    if field_bytes and field_bytes[0] & 0x80:
        value = field_bytes[0] & 0x7F
        for byte in field_bytes[1:]:
            value = (value << 8) | byte
        return value
    text = field_bytes.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


def _tar_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0].decode(errors="replace")
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0].decode(errors="replace")
        if prefix:
            name = f"{prefix}/{name}"
    return name


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _tar_number(header[148:156])
    except ValueError:
        return False
    computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == computed


class TarError(ValueError):
    """The stream is not the tar archive pg_basebackup writes."""


class TarScanner:
    """Watches a tar stream go by (fed in chunks of any size) and keeps a few members.

    ``capture`` maps member names to how many bytes of each to keep (the *last* bytes: of a
    ``backup_manifest`` larger than its limit, the tail holds what is read from it). It never holds more
    than those limits plus one chunk, whatever the size of the data directory; it reads headers only,
    skipping data.
    """

    def __init__(self, capture: Mapping[str, int]) -> None:
        self._limits = dict(capture)
        self.captured: dict[str, bytes] = {}
        self.sizes: dict[str, int] = {}
        """Full size of each captured member (larger than its captured bytes when only a tail was kept)."""
        self.members = 0
        self.ended = False
        """The end-of-archive marker (two zero blocks) was seen."""
        self._header = bytearray()
        self._remaining = 0
        self._padding = 0
        self._current: str | None = None
        self._buffer = bytearray()
        self._zero_blocks = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end and not self.ended:
            if self._remaining:
                take = min(self._remaining, end - pos)
                if self._current is not None:
                    self._keep(view[pos : pos + take])
                self._remaining -= take
                pos += take
                if not self._remaining:
                    self._finish_member()
            elif self._padding:
                take = min(self._padding, end - pos)
                self._padding -= take
                pos += take
            else:
                take = min(BLOCK - len(self._header), end - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) == BLOCK:
                    header = bytes(self._header)
                    self._header.clear()
                    self._on_header(header)

    def _on_header(self, header: bytes) -> None:
        if header == bytes(BLOCK):
            self._zero_blocks += 1
            self.ended = self._zero_blocks >= 2
            return
        if self._zero_blocks or not _checksum_ok(header):
            raise TarError(f"not a tar stream: bad header after {self.members} members")
        size = _tar_number(header[124:136])
        kind = header[156:157]
        name = _tar_name(header)
        self.members += 1
        self._remaining = size if kind not in (b"1", b"2", b"3", b"4", b"5", b"6") else 0
        self._padding = -self._remaining % BLOCK
        self._current = name if name in self._limits and kind in (b"0", b"\0", b"7") else None
        self._buffer.clear()
        if self._current is not None:
            self.sizes[self._current] = size
            if not size:
                self._finish_member()

    def _keep(self, chunk: memoryview) -> None:
        assert self._current is not None
        self._buffer += chunk
        limit = self._limits[self._current]
        if len(self._buffer) > limit:
            del self._buffer[: len(self._buffer) - limit]

    def _finish_member(self) -> None:
        if self._current is not None:
            self.captured[self._current] = bytes(self._buffer)
            self._buffer.clear()
            self._current = None


# ----------------------------------------------------------------------------- pure: where the backup lies


@dataclass(frozen=True)
class BackupLabel:
    start_lsn: int
    start_segment: str
    timeline: int
    label: str


@dataclass(frozen=True)
class ManifestWalRange:
    timeline: int
    start_lsn: int
    end_lsn: int


@dataclass(frozen=True)
class BackupPosition:
    """The WAL a base backup spans: recovery must replay ``timeline`` from ``start_lsn`` to ``stop_lsn``."""

    timeline: int
    start_lsn: int
    stop_lsn: int


_LABEL_START = re.compile(r"^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)$", re.M)
_LABEL_TIMELINE = re.compile(r"^START TIMELINE: (\d+)$", re.M)
_LABEL_LABEL = re.compile(r"^LABEL: (.*)$", re.M)
_WAL_RANGES = re.compile(rb'"WAL-Ranges"\s*:\s*(\[[^\]]*\])')


def parse_backup_label(text: str) -> BackupLabel:
    """``backup_label`` as the server writes it into a base backup; ValueError when a line is missing."""
    start = _LABEL_START.search(text)
    timeline = _LABEL_TIMELINE.search(text)
    label = _LABEL_LABEL.search(text)
    if start is None or timeline is None or label is None:
        raise ValueError("backup_label lacks START WAL LOCATION, START TIMELINE or LABEL")
    return BackupLabel(parse_lsn(start.group(1)), start.group(2), int(timeline.group(1)), label.group(1).strip())


def parse_wal_ranges(manifest_tail: bytes) -> list[ManifestWalRange]:
    """The ``WAL-Ranges`` of a ``backup_manifest`` (given its end, which holds them); ValueError if absent."""
    match = _WAL_RANGES.search(manifest_tail)
    if match is None:
        raise ValueError("backup_manifest has no WAL-Ranges")
    try:
        ranges = json.loads(match.group(1))
        return [
            ManifestWalRange(int(item["Timeline"]), parse_lsn(item["Start-LSN"]), parse_lsn(item["End-LSN"]))
            for item in ranges
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"backup_manifest WAL-Ranges unreadable: {error}") from None


def backup_position(label: BackupLabel, ranges: Sequence[ManifestWalRange], expected_label: str) -> BackupPosition:
    """Start and stop of the base backup, cross-checked between its label and its manifest."""
    if label.label != expected_label:
        raise ValueError(f"the stream's backup_label says {label.label!r}, not {expected_label!r}")
    if len(ranges) != 1:
        raise ValueError(f"the backup spans {len(ranges)} WAL ranges (a timeline switch during the backup); retry it")
    (only,) = ranges
    if only.timeline != label.timeline or only.start_lsn != label.start_lsn:
        raise ValueError(
            f"backup_label (timeline {label.timeline}, start {format_lsn(label.start_lsn)}) and backup_manifest "
            f"(timeline {only.timeline}, start {format_lsn(only.start_lsn)}) disagree"
        )
    if only.end_lsn < only.start_lsn:
        raise ValueError("backup_manifest ends before it starts")
    return BackupPosition(only.timeline, only.start_lsn, only.end_lsn)


def backup_history_name(position: BackupPosition, segment_size: int) -> str:
    """The ``.backup`` history file the server archives for this backup (start segment + offset)."""
    segment = segment_of_lsn(position.timeline, position.start_lsn, segment_size)
    return f"{segment.name(segment_size)}.{position.start_lsn % segment_size:08X}.backup"


def needed_wal(position: BackupPosition, segment_size: int, *, history_file: bool = True) -> list[str]:
    """Every WAL file the backup needs on storage before it counts, in name (= archive) order."""
    names = [
        segment.name(segment_size)
        for segment in required_segments(position.timeline, position.start_lsn, position.stop_lsn, segment_size)
    ]
    if history_file:
        names.append(backup_history_name(position, segment_size))
    return sorted(names)


def stop_segment(position: BackupPosition, segment_size: int) -> str:
    """The last segment the backup needs (the one holding the byte before ``stop_lsn``)."""
    return required_segments(position.timeline, position.start_lsn, position.stop_lsn, segment_size)[-1].name(segment_size)
