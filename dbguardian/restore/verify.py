"""The one comparison of a restored database against its backup's manifest.

Restore raises on a mismatch (nothing is renamed into place); a drill reports the same checks beside
its own. Both count the same way as the backup did at dump time (``dbfacts``), so equal means equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from dbguardian.catalog import LogicalManifest
from dbguardian.dbfacts import compare_counts, compare_object_counts, count_rows, object_counts
from dbguardian.errors import VerificationError


@dataclass
class CheckResult:
    name: str
    ok: bool
    observed: str
    expected: str


@dataclass(frozen=True)
class CountsVerdict:
    checks: list[CheckResult]
    tables: int
    rows: int

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def raise_for_mismatch(self) -> None:
        failing = [check.observed for check in self.checks if not check.ok]
        if failing:
            raise VerificationError("restored data differs from the manifest: " + "; ".join(failing))


async def verify_counts(connection: asyncpg.Connection, manifest: LogicalManifest) -> CountsVerdict:
    """Row counts per table and object counts per kind of the connected database, against ``manifest``."""
    actual = await count_rows(connection)
    kinds = await object_counts(connection)
    tables, rows = len(actual), sum(count.rows for count in actual)
    count_problems = compare_counts(manifest.tables, actual)
    kind_problems = compare_object_counts(manifest.object_counts, kinds)
    checks = [
        CheckResult(
            "row counts",
            not count_problems,
            "; ".join(count_problems) or f"{tables} tables, {rows} rows as at dump time",
            "every table's row count equals the manifest's",
        ),
        CheckResult(
            "object counts",
            not kind_problems,
            "; ".join(kind_problems) or ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
            "tables, sequences, indexes, views and functions as in the manifest",
        ),
    ]
    return CountsVerdict(checks, tables, rows)
