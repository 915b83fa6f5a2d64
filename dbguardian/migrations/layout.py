"""Where a migration's up and down SQL live, found from file names (pure; no database).

Two layouts, as teams already have them:

- golang-migrate's: ``NNN_name.up.sql`` / ``NNN_name.down.sql`` side by side;
- one directory per migration: ``NNN_name/up.sql`` / ``NNN_name/down.sql``.

``NNN`` is the version (digits; ``001``, ``20260115093000``), ``name`` is snake_case. Versions order the
migrations numerically; a gap between consecutive plain sequence numbers (``001``, ``003``) and two
migrations with one version are problems the lint reports.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

_FLAT = re.compile(r"^(?P<version>\d+)_(?P<name>[^.]+)\.(?P<direction>up|down)\.sql$")
_DIR = re.compile(r"^(?P<version>\d+)_(?P<name>[^/]+)$")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
TIMESTAMP_DIGITS = 12  # versions this long are timestamps: no sequence, so no gap check


@dataclass
class Migration:
    version: int
    digits: str
    name: str
    up: Path | None = None
    down: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.digits}_{self.name}"


@dataclass
class Layout:
    migrations: list[Migration] = field(default_factory=list)
    unmatched: list[Path] = field(default_factory=list)
    """SQL files whose names fit neither layout."""
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)


def _sql_files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(item for item in path.rglob("*.sql") if item.is_file())
        else:
            found.append(path)
    return found


def discover(paths: list[Path]) -> Layout:
    """Group the SQL files under ``paths`` (files or directories) into migrations, ordered by version."""
    layout = Layout()
    by_key: dict[tuple[str, str], Migration] = {}
    for path in _sql_files(paths):
        flat = _FLAT.match(path.name)
        nested = _DIR.match(path.parent.name) if path.name in ("up.sql", "down.sql") else None
        if flat:
            digits, name, direction = flat["version"], flat["name"], flat["direction"]
        elif nested:
            digits, name, direction = nested["version"], nested["name"], path.name.removesuffix(".sql")
        else:
            layout.unmatched.append(path)
            continue
        migration = by_key.setdefault((digits, name), Migration(int(digits), digits, name))
        existing = getattr(migration, direction)
        if existing is not None:
            layout.duplicates.append((existing, path))
            continue
        setattr(migration, direction, path)
    layout.migrations = sorted(by_key.values(), key=lambda item: (item.version, item.name))
    return layout


def sequence_problems(migrations: list[Migration]) -> list[str]:
    """Two migrations with one version, and gaps between plain sequence numbers."""
    problems: list[str] = []
    for before, after in itertools.pairwise(migrations):
        if before.version == after.version:
            problems.append(f"{before.label} and {after.label} have the same version {after.digits}")
        elif len(after.digits) < TIMESTAMP_DIGITS and after.version != before.version + 1:
            problems.append(f"gap in the sequence: {before.label} is followed by {after.label}")
    return problems
