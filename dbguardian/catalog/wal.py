"""WAL archive arithmetic, pure: LSNs, segment file names, timeline histories, chains, gaps, WAL retention.

Everything here works on names and numbers (no I/O), so the shipper, ``wal-fetch``, ``wal status``,
health checks and prune all agree on what a segment is, which segments a base backup needs, where the
gaps are and which WAL retention may delete.

- A segment is ``(timeline, number)``; ``number`` is ``lsn // segment_size``. Its file name is
  ``TTTTTTTTXXXXXXXXYYYYYYYY`` (PostgreSQL's ``XLogFileName``: ``XXXXXXXX = number // per_log``,
  ``YYYYYYYY = number % per_log``, ``per_log = 0x100000000 // segment_size``), so the names depend on the
  cluster's ``wal_segment_size`` (a power of two from 1 MiB to 1 GiB, 16 MiB by default).
- Other archive files: ``<segment>.partial`` (the last, unfinished segment of a timeline left at a
  promotion), ``<segment>.XXXXXXXX.backup`` (a base backup's label; ``XXXXXXXX`` is its start offset in
  the segment) and ``TTTTTTTT.history`` (the timelines a timeline branched from, with their switch LSNs).
- Timeline switches: a segment number is read from the newest timeline of the chain whose begin segment
  is not after it (PostgreSQL's ``XLogFileReadAnyTLI``), so following a switch means the old timeline
  up to the segment before the switch segment, then the new timeline.
- WAL retention keeps every segment a retained base backup may replay: on a backup's own timeline from
  its start segment on, and (when the histories are given) on every timeline that branched off it later.
  ``.history`` files are never deleted; without a retained base backup nothing is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_BACKUP = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")

FileKind = Literal["segment", "partial", "backup", "history"]


def check_segment_size(segment_size: int) -> int:
    """``segment_size`` itself; ValueError unless a power of two from 1 MiB to 1 GiB (what initdb allows)."""
    if not 1 << 20 <= segment_size <= 1 << 30 or segment_size & (segment_size - 1):
        raise ValueError(f"WAL segment size {segment_size} is not a power of two between 1 MiB and 1 GiB")
    return segment_size


def parse_lsn(text: str) -> int:
    """``16/B374D848`` as a 64-bit position."""
    match = _LSN.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an LSN like 16/B374D848")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """As PostgreSQL prints it (``%X/%X``)."""
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"{lsn} is not a 64-bit LSN")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _per_log(segment_size: int) -> int:
    return 0x100000000 // check_segment_size(segment_size)


@dataclass(frozen=True, order=True)
class Segment:
    timeline: int
    number: int

    def name(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
        per_log = _per_log(segment_size)
        if not 1 <= self.timeline <= 0xFFFFFFFF or not 0 <= self.number < per_log << 32:
            raise ValueError(f"no WAL segment {self.number} on timeline {self.timeline}")
        return f"{self.timeline:08X}{self.number // per_log:08X}{self.number % per_log:08X}"

    def start_lsn(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
        return self.number * check_segment_size(segment_size)


def segment_of_lsn(timeline: int, lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    """The segment holding the byte at ``lsn`` (``XLByteToSeg``; ``pg_walfile_name`` takes the byte before)."""
    return Segment(timeline, lsn // check_segment_size(segment_size))


def parse_segment_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Segment:
    match = _SEGMENT.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a WAL segment name (24 upper-case hex digits)")
    timeline, log, seg = (int(part, 16) for part in match.groups())
    per_log = _per_log(segment_size)
    if timeline == 0 or seg >= per_log:
        raise ValueError(f"{name!r} is not a WAL segment name for {segment_size // (1 << 20)} MiB segments")
    return Segment(timeline, log * per_log + seg)


def next_segment_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    segment = parse_segment_name(name, segment_size)
    return Segment(segment.timeline, segment.number + 1).name(segment_size)


def previous_segment_name(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    segment = parse_segment_name(name, segment_size)
    if segment.number == 0:
        raise ValueError(f"{name!r} is the first segment; there is none before it")
    return Segment(segment.timeline, segment.number - 1).name(segment_size)


@dataclass(frozen=True)
class WalFile:
    """One archive file name, classified. ``segment`` is None only for ``.history`` files."""

    name: str
    kind: FileKind
    timeline: int
    segment: Segment | None
    backup_offset: int | None = None
    """For ``.backup`` labels: the base backup's start offset inside ``segment``."""


def classify(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalFile:
    """What an archive file is; ValueError for anything PostgreSQL's archiver does not produce."""
    if match := _HISTORY.match(name):
        timeline = int(match.group(1), 16)
        if timeline < 2:
            raise ValueError(f"{name!r}: timeline 1 has no history file")
        return WalFile(name, "history", timeline, None)
    if match := _BACKUP.match(name):
        segment = parse_segment_name(match.group(1), segment_size)
        offset = int(match.group(2), 16)
        if offset >= segment_size:
            raise ValueError(f"{name!r}: backup offset {offset:#x} lies beyond the segment")
        return WalFile(name, "backup", segment.timeline, segment, offset)
    stem, partial = (name[: -len(".partial")], True) if name.endswith(".partial") else (name, False)
    if not _SEGMENT.match(stem):
        raise ValueError(f"{name!r} is not a WAL archive file name (segment, .partial, .backup or .history)")
    segment = parse_segment_name(stem, segment_size)
    return WalFile(name, "partial" if partial else "segment", segment.timeline, segment)


# Timeline histories.


@dataclass(frozen=True)
class TimelineSwitch:
    """One ``.history`` line: ``parent`` ended at ``switch_lsn`` (the next timeline begins there)."""

    parent: int
    switch_lsn: int


@dataclass(frozen=True)
class TimelineSpan:
    """A stretch of one timeline on the way to another: from ``begin`` up to (not including) ``end``."""

    timeline: int
    begin: int
    end: int | None


def parse_history(text: str) -> list[TimelineSwitch]:
    """A ``.history`` file's lines ``parentTLI<TAB>switchpoint<TAB>reason`` (``#`` comments, blank lines)."""
    switches: list[TimelineSwitch] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split("\t")
        if len(fields) < 2 or not fields[0].isdigit():
            raise ValueError(f"history line {number}: expected 'timeline<TAB>switch LSN<TAB>reason', got {line!r}")
        switch = TimelineSwitch(int(fields[0]), parse_lsn(fields[1].strip()))
        if switches and (switch.parent <= switches[-1].parent or switch.switch_lsn < switches[-1].switch_lsn):
            raise ValueError(f"history line {number}: timelines and switch points must increase")
        switches.append(switch)
    return switches


def timeline_path(timeline: int, histories: Mapping[int, Sequence[TimelineSwitch]]) -> list[TimelineSpan]:
    """The timelines that lead to ``timeline``, oldest first; its own history file lists all of them."""
    if timeline == 1:
        return [TimelineSpan(1, 0, None)]
    if timeline not in histories:
        raise ValueError(f"no history file for timeline {timeline}")
    spans: list[TimelineSpan] = []
    begin = 0
    for switch in histories[timeline]:
        spans.append(TimelineSpan(switch.parent, begin, switch.switch_lsn))
        begin = switch.switch_lsn
    if not spans or spans[-1].timeline >= timeline:
        raise ValueError(f"the history of timeline {timeline} does not lead to it")
    return [*spans, TimelineSpan(timeline, begin, None)]


def segments_on_path(
    path: Sequence[TimelineSpan], first: int, last: int, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> list[Segment]:
    """Segment numbers ``first..last`` each on the timeline recovery reads it from (the newest that began)."""
    begins = [(span.begin // check_segment_size(segment_size), span.timeline) for span in path]
    result = []
    for number in range(first, last + 1):
        timeline = next((tli for begin, tli in reversed(begins) if begin <= number), path[0].timeline)
        result.append(Segment(timeline, number))
    return result


# Chains and gaps.


def required_segments(
    timeline: int, start_lsn: int, stop_lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> list[Segment]:
    """The WAL a base backup needs to become consistent: start segment to the one holding the byte before
    ``stop_lsn`` (what ``pg_backup_stop`` waits to be archived)."""
    first = start_lsn // check_segment_size(segment_size)
    last = max(first, (stop_lsn - 1) // segment_size)
    return [Segment(timeline, number) for number in range(first, last + 1)]


def archived_segments(archived: Iterable[str], segment_size: int = DEFAULT_SEGMENT_SIZE) -> set[Segment]:
    """The complete segments among archive file names (``.partial``, ``.backup``, ``.history`` are not)."""
    found = (classify(name, segment_size) for name in archived)
    return {file.segment for file in found if file.kind == "segment" and file.segment is not None}


def missing_segments(
    archived: Iterable[str],
    timeline: int,
    from_segment: int,
    to_segment: int,
    *,
    path: Sequence[TimelineSpan] | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> list[Segment]:
    """The gaps: segments ``from_segment..to_segment`` of ``timeline`` (or along ``path``) not archived."""
    have = archived_segments(archived, segment_size)
    wanted = segments_on_path(path or [TimelineSpan(timeline, 0, None)], from_segment, to_segment, segment_size)
    return [segment for segment in wanted if segment not in have]


def chain_is_complete(
    archived: Iterable[str], timeline: int, start_lsn: int, stop_lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> bool:
    """Whether every segment a base backup needs to become consistent is archived."""
    have = archived_segments(archived, segment_size)
    return all(segment in have for segment in required_segments(timeline, start_lsn, stop_lsn, segment_size))


# Retention.


@dataclass(frozen=True)
class BaseBackupWal:
    """What WAL retention needs to know of a retained base backup."""

    backup_id: str
    timeline: int
    start_lsn: int


@dataclass(frozen=True)
class WalDecision:
    name: str
    delete: bool
    reason: str


def wal_to_delete(
    archived: Iterable[str],
    retained: Iterable[BaseBackupWal],
    *,
    histories: Mapping[int, Sequence[TimelineSwitch]] | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> list[WalDecision]:
    """A decision for every archive file: deleted only below the oldest retained base backup reaching its timeline.

    A backup reaches its own timeline and, with ``histories``, every timeline branched from it later
    (recovery past the switch). A timeline no retained backup reaches is kept whole: without its history
    we cannot tell it apart from one branched off a retained backup.
    """
    backups = list(retained)
    floors: dict[int, tuple[int, str]] = {}  # timeline -> (lowest start segment, backup id)
    for backup in backups:
        number = backup.start_lsn // check_segment_size(segment_size)
        reached = {backup.timeline} | _descendants(backup.timeline, histories or {})
        for timeline in reached:
            if timeline not in floors or number < floors[timeline][0]:
                floors[timeline] = (number, backup.backup_id)
    decisions = []
    for name in sorted(set(archived)):
        file = classify(name, segment_size)
        floor = floors.get(file.timeline)
        if file.kind == "history":
            decisions.append(WalDecision(name, False, "kept: history files are never deleted"))
        elif not backups:
            decisions.append(WalDecision(name, False, "kept: no retained base backup"))
        elif floor is None:
            decisions.append(WalDecision(name, False, f"kept: no retained base backup reaches timeline {file.timeline}"))
        elif file.segment is not None and file.segment.number < floor[0]:
            start = Segment(file.timeline, floor[0]).name(segment_size)
            decisions.append(
                WalDecision(name, True, f"before {start}, the start of the oldest retained base backup {floor[1]}")
            )
        else:
            decisions.append(WalDecision(name, False, f"kept: needed by base backup {floor[1]}"))
    return decisions


def _descendants(timeline: int, histories: Mapping[int, Sequence[TimelineSwitch]]) -> set[int]:
    """Timelines whose history passes through ``timeline`` (a backup on it can be replayed into them)."""
    return {child for child, switches in histories.items() if any(s.parent == timeline for s in switches)}


@dataclass(frozen=True)
class WalRange:
    """A run of consecutive segments of one timeline (for showing what retention deletes)."""

    first: str
    last: str
    count: int


def segment_ranges(names: Iterable[str], segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[WalRange]:
    """Consecutive segments grouped into ranges; other archive files (``.backup``, ``.partial``) count
    with the segment they belong to and never start a range of their own."""
    numbers = sorted({(f.timeline, f.segment.number) for f in map(lambda n: classify(n, segment_size), names)
                      if f.segment is not None})  # fmt: skip
    ranges: list[WalRange] = []
    start = previous = numbers[0] if numbers else None
    count = 0
    for item in numbers:
        assert start is not None and previous is not None
        if count and (item[0] != previous[0] or item[1] != previous[1] + 1):
            ranges.append(_range(start, previous, count, segment_size))
            start, count = item, 0
        previous = item
        count += 1
    if start is not None and previous is not None:
        ranges.append(_range(start, previous, count, segment_size))
    return ranges


def _range(start: tuple[int, int], end: tuple[int, int], count: int, segment_size: int) -> WalRange:
    return WalRange(Segment(*start).name(segment_size), Segment(*end).name(segment_size), count)
