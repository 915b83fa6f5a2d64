"""The object layout on every storage: the only place object keys are built and parsed.

::

    <target>/<backup id>/manifest.json          the commit record, written last
    <target>/<backup id>/dump.pgc<suffix>       logical: the pg_dump custom-format archive
    <target>/<backup id>/globals.sql<suffix>    logical: pg_dumpall --globals-only (when enabled)
    <target>/<backup id>/base.tar<suffix>       physical: the base backup (pg_basebackup's tar)
    <target>/wal/<timeline>/<segment><suffix>   WAL segments, .backup labels and history files
    _dbguardian/probe/<host>-<token>            the health check's write/read/delete probe
    _dbguardian/state/<target>.json             the target leader's safety state, for the next leader

``<suffix>`` names what was done to the stream, in order (``.zst``, ``.gz.age``). Backup folders and
the ``wal`` folder are siblings under ``<target>/``, so a delimiter listing of ``<target>/`` finds the
backups without walking WAL; a backup id can never be ``wal``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

MANIFEST_NAME = "manifest.json"
DUMP_NAME = "dump.pgc"
GLOBALS_NAME = "globals.sql"
BASE_NAME = "base.tar"
WAL_DIR = "wal"
PROBE_PREFIX = "_dbguardian/probe/"
STATE_PREFIX = "_dbguardian/state/"

_ID = re.compile(r"^(\d{8}T\d{6})\.(\d{6})Z-([0-9a-f]{4})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{16})(\.partial|\.[0-9A-F]{8}\.backup)?$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_WAL_OBJECT = re.compile(
    r"^([0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)(\.zst|\.gz|)(\.age|\.gpg|)$"
)


def new_backup_id(now: datetime, entropy: str | None = None) -> str:
    """``20261122T020000.123456Z-3fa1``: UTC to the microsecond plus random hex.

    Ids sort lexicographically in time order; the suffix keeps two runs started in the same
    microsecond (two processes) apart.
    """
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{entropy if entropy is not None else secrets.token_hex(2)}"


def parse_backup_id(backup_id: str) -> datetime:
    match = _ID.match(backup_id)
    if not match:
        raise ValueError(f"{backup_id!r} is not a backup id")
    return datetime.strptime(f"{match.group(1)}.{match.group(2)}", "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)


def is_backup_id(text: str) -> bool:
    return bool(_ID.match(text))


def target_prefix(target: str) -> str:
    """Everything of one target: its backup folders and its WAL."""
    return f"{target}/"


def backup_id_prefix(target: str, start: str) -> str:
    """Every backup folder whose id starts with ``start`` (ids start with their year's digits; ``wal/``
    and other reserved names start with a letter, so a listing of this prefix never walks them)."""
    if not start or not start[0].isdigit():
        raise ValueError(f"backup ids start with a digit, not {start!r}")
    return f"{target}/{start}"


def backup_prefix(target: str, backup_id: str) -> str:
    """The folder of one backup (every object of it, manifest included)."""
    return f"{target}/{backup_id}/"


def manifest_key(target: str, backup_id: str) -> str:
    return f"{target}/{backup_id}/{MANIFEST_NAME}"


def object_key(target: str, backup_id: str, name: str) -> str:
    return f"{target}/{backup_id}/{name}"


def dump_key(target: str, backup_id: str, suffix: str) -> str:
    return object_key(target, backup_id, DUMP_NAME + suffix)


def globals_key(target: str, backup_id: str, suffix: str) -> str:
    return object_key(target, backup_id, GLOBALS_NAME + suffix)


def base_key(target: str, backup_id: str, suffix: str) -> str:
    return object_key(target, backup_id, BASE_NAME + suffix)


@dataclass(frozen=True)
class BackupObjectKey:
    """A key inside a backup folder, split into its parts."""

    target: str
    backup_id: str
    name: str

    @property
    def folder(self) -> str:
        return backup_prefix(self.target, self.backup_id)

    @property
    def is_manifest(self) -> bool:
        return self.name == MANIFEST_NAME


def parse_backup_key(key: str) -> BackupObjectKey | None:
    """``<target>/<backup id>/<name>`` split; None for anything else (WAL, probes, stray objects)."""
    parts = key.split("/")
    if len(parts) != 3 or not is_backup_id(parts[1]) or not parts[0] or not parts[2]:
        return None
    return BackupObjectKey(parts[0], parts[1], parts[2])


def folder_name(prefix: str, entry: str) -> str:
    """A ``list_dirs`` entry as a bare folder name, whether the backend gave ``name`` or ``prefix/name/``."""
    return entry.removeprefix(prefix).strip("/")


# WAL (reserved: the WAL shipper writes here; backup listing never walks it).


def wal_prefix(target: str, timeline: int | None = None) -> str:
    base = f"{target}/{WAL_DIR}/"
    return base if timeline is None else f"{base}{timeline:08X}/"


def wal_key(target: str, file_name: str, suffix: str = "") -> str:
    """Where a WAL segment (``000000010000000A000000FE``), partial, backup label or history file lives."""
    match = _SEGMENT.match(file_name) or _HISTORY.match(file_name)
    if not match:
        raise ValueError(f"{file_name!r} is not a WAL file name")
    return f"{wal_prefix(target, int(match.group(1), 16))}{file_name}{suffix}"


@dataclass(frozen=True)
class WalObjectKey:
    """A key in the WAL namespace, split into its parts."""

    target: str
    timeline: int
    file_name: str
    suffix: str


def parse_wal_key(key: str) -> WalObjectKey | None:
    """``<target>/wal/<timeline>/<file name><suffix>`` split; None for anything else (stray objects, a file
    under another timeline's folder, an unknown suffix such as a temporary upload)."""
    parts = key.split("/")
    if len(parts) != 4 or not parts[0] or parts[1] != WAL_DIR:
        return None
    match = _WAL_OBJECT.match(parts[3])
    if not match:
        return None
    name, suffix = match.group(1), match.group(2) + match.group(3)
    timeline = int(name[:8], 16)
    if parts[2] != f"{timeline:08X}":
        return None
    return WalObjectKey(parts[0], timeline, name, suffix)


def is_wal_key(key: str) -> bool:
    parts = key.split("/")
    return len(parts) >= 2 and parts[1] == WAL_DIR


def state_key(target: str) -> str:
    """The target's safety state (last attempt, alert states, failure counters) that its leading daemon
    keeps for whichever daemon leads next (:mod:`dbguardian.handover`); outside every target's folder."""
    return f"{STATE_PREFIX}{target}.json"


def probe_key(host: str, token: str) -> str:
    """A short-lived object the health check writes, reads back and deletes (outside every target)."""
    return f"{PROBE_PREFIX}{host}-{token}"
