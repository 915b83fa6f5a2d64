"""``dbguardian migrations lint``: rules a migration directory should keep, each finding with file:line.

Statements are parsed with PostgreSQL's own parser (pglast wraps libpg_query, the server's grammar):
a regular expression cannot tell ``DROP`` in a string or a comment from a statement, nor see that a
file does not parse at all. Errors fail the lint (exit 1); warnings are printed.

Errors: a file name that fits neither layout (:mod:`dbguardian.migrations.layout`) or is not
``NNN_snake_case``; two migrations with one version or a gap in a plain sequence; an up without its
down (or the reverse); a file that does not parse; ``BEGIN`` / ``COMMIT`` / ``ROLLBACK`` inside a file
(the runner owns the transaction: one per file). Warnings: ``DROP`` without ``IF EXISTS``, ``CASCADE``
(drops what depends on the object, silently), a file that does not start with a comment saying what
it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from dbguardian.migrations.layout import SNAKE, Layout, discover, sequence_problems

Severity = Literal["error", "warning"]
_DROPS = {enums.AlterTableType.AT_DropColumn, enums.AlterTableType.AT_DropConstraint}


@dataclass(frozen=True)
class Finding:
    severity: Severity
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, max(0, min(offset, len(text)))) + 1


def _statement_findings(path: Path, text: str, statements: Any) -> list[Finding]:
    found: list[Finding] = []
    for raw in statements:
        statement, line = raw.stmt, line_of(text, raw.stmt_location)
        if isinstance(statement, ast.TransactionStmt):
            found.append(Finding("error", path, line, "explicit transaction control (BEGIN/COMMIT/ROLLBACK): "
                                 "each migration file already runs in one transaction"))  # fmt: skip
        elif isinstance(statement, ast.DropStmt):
            if not statement.missing_ok:
                found.append(Finding("warning", path, line, "DROP without IF EXISTS"))
            if statement.behavior == enums.DropBehavior.DROP_CASCADE:
                found.append(Finding("warning", path, line, "DROP ... CASCADE also drops everything that depends on it"))
        elif isinstance(statement, ast.AlterTableStmt):
            for command in statement.cmds or ():
                if isinstance(command, ast.AlterTableCmd) and command.subtype in _DROPS:
                    if not command.missing_ok:
                        found.append(Finding("warning", path, line, "ALTER TABLE ... DROP without IF EXISTS"))
                    if command.behavior == enums.DropBehavior.DROP_CASCADE:
                        found.append(Finding("warning", path, line, "ALTER TABLE ... DROP ... CASCADE"))
    return found


def lint_file(path: Path, text: str) -> list[Finding]:
    """The findings of one file's content (parse, statements, header)."""
    found: list[Finding] = []
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first.startswith(("--", "/*")):
        found.append(Finding("warning", path, 1, "no comment header saying what the migration does"))
    try:
        statements = parse_sql(text)
    except ParseError as error:
        message, offset = (*error.args, 0)[:2]
        found.append(Finding("error", path, line_of(text, int(offset)), f"does not parse: {message}"))
        return found
    return found + _statement_findings(path, text, statements)


def layout_findings(layout: Layout) -> list[Finding]:
    found = [Finding("error", path, 1, "not a migration file name: NNN_name.up.sql / NNN_name.down.sql or "
                     "NNN_name/up.sql / NNN_name/down.sql") for path in layout.unmatched]  # fmt: skip
    found += [Finding("error", second, 1, f"a second file for the same migration as {first}")
              for first, second in layout.duplicates]  # fmt: skip
    for migration in layout.migrations:
        anchor = migration.up or migration.down
        assert anchor is not None
        if not SNAKE.match(migration.name):
            found.append(Finding("error", anchor, 1, f"name {migration.name!r} is not snake_case (NNN_snake_case)"))
        if migration.down is None:
            found.append(Finding("error", anchor, 1, f"{migration.label} has an up but no down migration"))
        if migration.up is None:
            found.append(Finding("error", anchor, 1, f"{migration.label} has a down but no up migration"))
    for problem in sequence_problems(layout.migrations):
        anchor = layout.migrations[0].up or layout.migrations[0].down
        assert anchor is not None
        found.append(Finding("error", anchor.parent, 1, problem))
    return found


def lint(paths: list[Path]) -> list[Finding]:
    """Every finding for the migrations under ``paths`` (files or directories), in file order."""
    layout = discover(paths)
    found = layout_findings(layout)
    for migration in layout.migrations:
        for path in (migration.up, migration.down):
            if path is not None:
                found += lint_file(path, path.read_text(errors="replace"))
    return sorted(found, key=lambda item: (str(item.path), item.line, item.severity))
