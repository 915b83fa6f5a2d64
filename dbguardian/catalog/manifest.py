"""The manifest: the commit record of one backup, typed and versioned.

A backup exists only where its manifest exists; the manifest is written last, after every object it
names is durable. It says what kind of backup it is:

- ``logical``: pg_dump custom-format archive (plus optional globals), restored into a staging database.
- ``physical``: a base backup plus the WAL range it needs; an incremental one also names the backups it
  is based on (``incremental_of``, ``chain``).

Formats (``format``): 1 — written by dbguardian 0.1, logical only, no ``kind``; 2 — ``kind`` names the
backup kind; 3 — an incremental base backup (written for those only, so that a dbguardian that does not
know incrementals refuses them instead of restoring one without its chain). A reader accepts every
format up to :data:`MANIFEST_FORMAT` and refuses newer ones with :class:`UnsupportedManifestFormat`: a
newer writer may have changed what fields mean, and guessing could restore the wrong thing. Compression
and encryption keep the JSON shape format 1 gave them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from dbguardian.catalog import keys
from dbguardian.catalog.wal import parse_lsn
from dbguardian.errors import OperationError
from dbguardian.policy.target import SAFETY_TIER as SAFETY_TIER  # the catalog's callers name it here

MANIFEST_FORMAT = 3
"""The newest manifest format this code reads."""
WRITTEN_FORMAT = 2
"""The format of every manifest written, but an incremental base backup's (:data:`INCREMENTAL_FORMAT`)."""
INCREMENTAL_FORMAT = 3

Kind = Literal["logical", "physical"]

_ENCODING = re.compile(r"^[A-Za-z0-9_]{1,32}$")
_LOCALE_FORBIDDEN = re.compile(r"['\"\\;\x00-\x1f\x7f]")


class InvalidManifest(OperationError):
    """A manifest that cannot be read: not JSON, missing or wrong fields, or not where it claims to be."""


class UnsupportedManifestFormat(InvalidManifest):
    """A manifest written by a newer dbguardian in a format this version does not know."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Compression(_Record):
    algorithm: Literal["zstd", "gzip", "none"]
    level: int


class Encryption(_Record):
    method: Literal["age", "gpg"]
    recipients: list[str]
    """age public keys or gpg fingerprints the objects are encrypted to."""


class StoredObject(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str
    size_bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    raw_size_bytes: int = Field(ge=0)
    role_passwords: bool | None = None
    """For globals: whether role password hashes are included (only a superuser can read them)."""


class TableCount(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_name: str
    table: str
    rows: int

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.table}"


class BaseManifest(BaseModel):
    """What every backup kind records."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: int = WRITTEN_FORMAT
    kind: Kind
    id: str
    target: str
    tier: str
    database: str
    server_version: str
    dbguardian_version: str
    host: str
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    raw_size_bytes: int
    size_bytes: int
    sha256: str
    compression: Compression
    encryption: Encryption | None = None
    storage: list[str]
    objects: dict[str, StoredObject]

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value > MANIFEST_FORMAT:
            raise ValueError(newer_format_message(value))
        if value < 1:
            raise ValueError(f"manifest format {value} does not exist")
        return value

    @field_validator("id")
    @classmethod
    def _backup_id(cls, value: str) -> str:
        if not keys.is_backup_id(value):
            raise ValueError(f"{value!r} is not a backup id")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if not value or "/" in value or value in (".", ".."):
            raise ValueError(f"{value!r} is not a target name")
        return value

    @model_validator(mode="after")
    def _objects_in_own_folder(self) -> BaseManifest:
        # A manifest comes from a bucket; it may only point at objects of its own backup.
        folder = keys.backup_prefix(self.target, self.id)
        for name, stored in self.objects.items():
            if not stored.key.startswith(folder) or keys.parse_backup_key(stored.key) is None:
                raise ValueError(f"object {name!r} ({stored.key}) lies outside the backup's folder {folder}")
        return self

    @property
    def consistent_at(self) -> datetime:
        """The moment whose state the backup holds (overridden per kind)."""
        return self.started_at


class LogicalManifest(BaseManifest):
    """A pg_dump backup: restored into a staging database, row counts checked against ``tables``."""

    kind: Literal["logical"] = "logical"  # the default makes format 1 (no kind) read as logical
    pg_dump_version: str
    tables: list[TableCount]
    row_counts_from: Literal["dump", "snapshot", "dump+snapshot"] = "snapshot"
    """How ``tables`` was counted: from the rows in pg_dump's own output (dbguardian/pipeline/dumpcount.py),
    by ``count(*)`` in the snapshot pg_dump read (manifests before this field), or both (tables the
    dump's stream could not account for were counted on the server)."""
    object_counts: dict[str, int]
    database_size_bytes: int
    encoding: str
    lc_collate: str
    lc_ctype: str
    snapshot: str

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        if not _ENCODING.match(value):
            raise ValueError(f"{value!r} is not a PostgreSQL encoding name")
        return value

    @field_validator("lc_collate", "lc_ctype")
    @classmethod
    def _locale(cls, value: str) -> str:
        if not value or _LOCALE_FORBIDDEN.search(value):
            raise ValueError(f"{value!r} is not a locale name")
        return value

    @property
    def consistent_at(self) -> datetime:
        # The snapshot pg_dump reads is exported right after the run starts.
        return self.started_at


class PhysicalManifest(BaseManifest):
    """A base backup (pg_basebackup) and the WAL range from ``start_lsn`` to ``stop_lsn`` it needs."""

    kind: Literal["physical"]
    start_lsn: str
    stop_lsn: str
    timeline: int = Field(ge=1)
    system_identifier: str = Field(pattern=r"^[0-9]{1,20}$")
    """The cluster's pg_control system identifier (a 64-bit number, kept as text: JSON readers lose digits)."""
    pg_version: int = Field(ge=10)
    """The data directory's major version (its ``PG_VERSION`` file); the server that restores must match."""
    incremental_of: str | None = None
    """An incremental base backup (PostgreSQL 17+): the backup it was taken against (full or incremental)."""
    chain: list[str] = Field(default_factory=list)
    """An incremental's whole chain, the full backup first and ``incremental_of`` last: what a restore combines
    (``pg_combinebackup``) before this one. Empty for a full base backup."""

    @field_validator("start_lsn", "stop_lsn")
    @classmethod
    def _lsn(cls, value: str) -> str:
        parse_lsn(value)  # raises ValueError naming the expected form
        return value.upper()

    @model_validator(mode="after")
    def _range(self) -> PhysicalManifest:
        if parse_lsn(self.stop_lsn) < parse_lsn(self.start_lsn):
            raise ValueError(f"stop_lsn {self.stop_lsn} is before start_lsn {self.start_lsn}")
        if self.format < 2:
            raise ValueError("physical backups need manifest format 2 or newer")
        if self.incremental_of is not None:
            if self.format < INCREMENTAL_FORMAT:
                raise ValueError(f"incremental base backups need manifest format {INCREMENTAL_FORMAT} or newer")
            if not self.chain or self.chain[-1] != self.incremental_of or self.id in self.chain:
                raise ValueError(f"chain {self.chain} does not end with incremental_of {self.incremental_of}")
            if not all(keys.is_backup_id(link) for link in self.chain):
                raise ValueError(f"chain {self.chain} holds something that is not a backup id")
        elif self.chain:
            raise ValueError("a full base backup has no chain")
        return self

    @property
    def consistent_at(self) -> datetime:
        # A base backup is consistent only once recovery reaches stop_lsn, i.e. when the backup finished.
        return self.finished_at


AnyManifest = LogicalManifest | PhysicalManifest
_ANY: TypeAdapter[AnyManifest] = TypeAdapter(Annotated[AnyManifest, Field(discriminator="kind")])


def newer_format_message(found: int) -> str:
    return f"manifest format {found} is newer than this dbguardian understands (≤ {MANIFEST_FORMAT}); upgrade dbguardian"


def parse_manifest(data: bytes | str, where: str = "manifest") -> AnyManifest:
    """Read a stored manifest; raises :class:`InvalidManifest` (or :class:`UnsupportedManifestFormat`).

    ``where`` (a key, a path) goes into the error message.
    """
    try:
        raw: Any = json.loads(data)
    except ValueError as error:
        raise InvalidManifest(f"{where}: not JSON ({error})") from None
    if not isinstance(raw, dict):
        raise InvalidManifest(f"{where}: not a JSON object")
    found = raw.get("format")
    if not isinstance(found, int) or isinstance(found, bool):
        raise InvalidManifest(f"{where}: no manifest format number")
    if found > MANIFEST_FORMAT:
        raise UnsupportedManifestFormat(f"{where}: {newer_format_message(found)}")
    if found < 1:
        raise InvalidManifest(f"{where}: manifest format {found} does not exist")
    if found == 1:
        # Format 1 knew one kind; its manifests have no "kind" field.
        if raw.get("kind", "logical") != "logical":
            raise InvalidManifest(f"{where}: format 1 manifests are logical backups, not {raw.get('kind')!r}")
        raw = {**raw, "kind": "logical"}
    elif "kind" not in raw:
        raise InvalidManifest(f"{where}: no backup kind")
    try:
        return _ANY.validate_python(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidManifest(f"{where}: {field}: {first['msg']}") from None


def encode_manifest(manifest: BaseManifest) -> bytes:
    return manifest.model_dump_json(indent=2).encode()
