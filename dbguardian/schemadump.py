"""``dbguardian schema dump`` / ``schema diff``: a database's schema as text for review in git, and drift.

``pg_dump --schema-only`` already orders objects by kind, schema and name; what changes between two
dumps of the same schema is the noise around them: the server and pg_dump versions in the banner,
the random key of ``\\restrict`` / ``\\unrestrict`` (PostgreSQL 13.22+/17.6+ and the 2025 minor
releases), ownership and privileges (which differ between production and a laptop), and blank-line
runs. :func:`normalize` removes exactly those (ownership and privileges stay with
``with_privileges``), so the same schema gives byte-identical text on any server and after a restore.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from dbguardian.errors import OperationError
from dbguardian.pipeline.process import Child
from dbguardian.policy import Policy
from dbguardian.postgres import ConnectionInfo, connection_info, find_tool, server_major_at

_BANNER = re.compile(r"^-- (Dumped from database version|Dumped by pg_dump version|Started on|Completed on)\b")
_RESTRICT = re.compile(r"^\\(un)?restrict\b")
_OWNER_COMMENT = re.compile(r"(; Owner: )[^;\n]*$")


def normalize(text: str, *, with_privileges: bool = False) -> str:
    """pg_dump's schema text without what differs between two dumps of the same schema (see module doc)."""
    lines: list[str] = []
    for line in text.splitlines():
        if _BANNER.match(line) or _RESTRICT.match(line):
            continue
        if not with_privileges:
            line = _OWNER_COMMENT.sub(r"\1-", line)
        if not line.strip() and (not lines or not lines[-1].strip()):
            continue  # one blank line at most, none at the start
        lines.append(line.rstrip())
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"


def unified_diff(expected: str, actual: str, expected_name: str, actual_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True), expected_name, actual_name
        )
    )


@dataclass(frozen=True)
class SchemaChange:
    """What a drift changed, in words for an alert: ``added table shop.refunds``, ``removed index …``."""

    action: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.action} {self.kind} {self.name}"


_CREATE = re.compile(
    r"^CREATE (?:UNIQUE )?(TABLE|INDEX|VIEW|MATERIALIZED VIEW|SEQUENCE|FUNCTION|PROCEDURE|TYPE|SCHEMA|TRIGGER|EXTENSION)"
    r"(?: IF NOT EXISTS)? ([^\s(]+)"
)
_ADD_COLUMN = re.compile(r"^    ([a-z_][a-z0-9_$]*|\"[^\"]+\") ")


def _objects(text: str) -> dict[tuple[str, str], set[str]]:
    """Objects created in a normalized dump, and for tables their column lines."""
    found: dict[tuple[str, str], set[str]] = {}
    current: tuple[str, str] | None = None
    for line in text.splitlines():
        match = _CREATE.match(line)
        if match:
            kind = match.group(1).lower()
            current = (kind, match.group(2))
            found[current] = set()
            if not line.rstrip().endswith("("):
                current = None
            continue
        if current is not None:
            if line.startswith(")"):
                current = None
            elif _ADD_COLUMN.match(line):
                found[current].add(line.strip().rstrip(","))
    return found


def changes(expected: str, actual: str) -> list[SchemaChange]:
    """Tables, columns, indexes and other objects added or removed from ``expected`` to ``actual``."""
    before, after = _objects(expected), _objects(actual)
    found: list[SchemaChange] = []
    for key in sorted(after.keys() - before.keys()):
        found.append(SchemaChange("added", *key))
    for key in sorted(before.keys() - after.keys()):
        found.append(SchemaChange("removed", *key))
    for key in sorted(before.keys() & after.keys()):
        kind, name = key
        added = {column.split()[0] for column in after[key]} - {column.split()[0] for column in before[key]}
        removed = {column.split()[0] for column in before[key]} - {column.split()[0] for column in after[key]}
        found += [SchemaChange("added", "column", f"{name}.{column}") for column in sorted(added)]
        found += [SchemaChange("removed", "column", f"{name}.{column}") for column in sorted(removed)]
        if not added and not removed and after[key] != before[key]:
            found.append(SchemaChange("changed", kind, name))
    return found


async def dump_schema(policy: Policy, target_name: str, *, server: ConnectionInfo | None = None,
                      with_privileges: bool = False) -> str:  # fmt: skip
    """The normalized schema of the target's database (or of ``server``'s)."""
    info = server or connection_info(policy.target(target_name))
    tool = await find_tool("pg_dump", await server_major_at(info), policy.pg_bin_dirs)
    argv = [tool.path, "--schema-only", "--no-password", f"--dbname={info.database}"]
    if not with_privileges:
        argv += ["--no-owner", "--no-privileges"]
    async with Child(argv, env=info.libpq_env()) as child:
        raw = b"".join([chunk async for chunk in child.stdout_chunks()])
        await child.wait_checked()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise OperationError(f"the schema of {info.describe()} is not UTF-8 text") from None
    return normalize(text, with_privileges=with_privileges)
