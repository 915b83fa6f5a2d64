"""The one comparison of a restored database against its backup's manifest.

Restore raises on a mismatch (nothing is renamed into place); a drill reports the same checks beside
its own. Both count the same way as the backup did at dump time (``dbfacts``), so equal means equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from dbguardian.catalog import LogicalManifest, TableCount
from dbguardian.dbfacts import compare_counts, compare_object_counts, count_rows, dumped_tables, object_counts
from dbguardian.drill import judge
from dbguardian.errors import VerificationError
from dbguardian.policy import DrillConfig


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
    return await counts_verdict(connection, manifest, await count_rows(connection))


async def count_restored_rows(connection: asyncpg.Connection) -> list[TableCount]:
    """Every table's exact row count, the last tables of the dump first: run while pg_restore builds the
    indexes and constraints (table by table, in dump order), a count waits for the ``ACCESS EXCLUSIVE``
    lock of a primary key being added, so it starts where pg_restore will arrive last."""
    return list(reversed(await count_rows(connection, list(reversed(await dumped_tables(connection))))))


async def counts_verdict(
    connection: asyncpg.Connection, manifest: LogicalManifest, actual: list[TableCount]
) -> CountsVerdict:
    """``actual`` row counts and the connected database's object counts, against ``manifest``."""
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


async def user_checks(connection: asyncpg.Connection, config: DrillConfig) -> list[CheckResult]:
    results = []
    for check in config.checks:
        try:
            value = await connection.fetchval(check.sql)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            results.append(CheckResult(f"check: {check.name}", False, f"query failed: {error}", check.expect))
            continue
        observed = "no value (NULL or no row)" if value is None else f"returned {value!r}"
        results.append(CheckResult(f"check: {check.name}", judge(value, check.expect), observed, check.expect))
    return results


async def amcheck(connection: asyncpg.Connection) -> CheckResult:
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        indexes = await connection.fetch(
            """SELECT c.oid, n.nspname || '.' || c.relname AS name
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam
               WHERE a.amname = 'btree' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND n.nspname NOT LIKE 'pg\\_toast%'"""
        )
        for index in indexes:
            await connection.execute("SELECT bt_index_check($1::oid::regclass, true)", index["oid"])
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return CheckResult("amcheck", False, f"{error}", "every B-tree index passes bt_index_check")
    return CheckResult("amcheck", True, f"{len(indexes)} B-tree indexes checked", "every B-tree index passes bt_index_check")
