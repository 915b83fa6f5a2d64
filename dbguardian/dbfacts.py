"""What a database holds: server facts, the tables pg_dump dumps, exact row counts, object counts.

The same queries describe the source at dump time (inside the exported snapshot) and the restored
copy afterwards, so the two can be compared exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from dbguardian.catalog import TableCount

# Schemas that are not the user's data; extension members are dumped as CREATE EXTENSION only.
_USER_OBJECT = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
    AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = '{catalog}'::regclass AND d.objid = {oid} AND d.deptype = 'e')
"""
_TABLES = f"""
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND {_USER_OBJECT.format(catalog="pg_class", oid="c.oid")}
ORDER BY 1, 2
"""
_RELATION_COUNTS = f"""
SELECT c.relkind::text, count(*)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'S', 'i', 'v', 'm') AND c.relpersistence <> 't'
  AND {_USER_OBJECT.format(catalog="pg_class", oid="c.oid")}
GROUP BY 1
"""
_FUNCTION_COUNT = f"""
SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE {_USER_OBJECT.format(catalog="pg_proc", oid="p.oid")}
"""
_RELKIND_NAMES = {
    "r": "tables",
    "p": "tables",
    "S": "sequences",
    "i": "indexes",
    "v": "views",
    "m": "materialized_views",
}


@dataclass(frozen=True)
class ServerFacts:
    server_version: str
    server_version_num: int
    database_size: int
    encoding: str
    lc_collate: str
    lc_ctype: str


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def server_facts(connection: asyncpg.Connection) -> ServerFacts:
    row = await connection.fetchrow(
        """SELECT current_setting('server_version') AS version,
                  current_setting('server_version_num')::int AS version_num,
                  pg_database_size(d.oid) AS size, pg_encoding_to_char(d.encoding) AS encoding,
                  d.datcollate AS collate, d.datctype AS ctype
           FROM pg_database d WHERE d.datname = current_database()"""
    )
    assert row is not None
    return ServerFacts(
        server_version=row["version"],
        server_version_num=row["version_num"],
        database_size=row["size"],
        encoding=row["encoding"],
        lc_collate=row["collate"],
        lc_ctype=row["ctype"],
    )


async def dumped_tables(connection: asyncpg.Connection) -> list[tuple[str, str]]:
    """(schema, table) of every table whose data pg_dump dumps, in the connection's snapshot, sorted."""
    return [(schema, table) for schema, table in await connection.fetch(_TABLES)]


async def count_rows(connection: asyncpg.Connection, tables: list[tuple[str, str]] | None = None) -> list[TableCount]:
    """Exact row counts (a scan each) of ``tables``, by default every table pg_dump dumps, in the connection's snapshot."""
    counts = []
    for schema, table in await dumped_tables(connection) if tables is None else tables:
        rows = await connection.fetchval(f"SELECT count(*) FROM ONLY {quote_ident(schema)}.{quote_ident(table)}")
        counts.append(TableCount(schema_name=schema, table=table, rows=rows))
    return counts


async def object_counts(connection: asyncpg.Connection) -> dict[str, int]:
    counts = dict.fromkeys(("tables", "sequences", "indexes", "views", "materialized_views", "functions"), 0)
    for relkind, amount in await connection.fetch(_RELATION_COUNTS):
        counts[_RELKIND_NAMES[relkind]] += amount
    counts["functions"] = await connection.fetchval(_FUNCTION_COUNT)
    return counts


def compare_counts(expected: list[TableCount], actual: list[TableCount]) -> list[str]:
    """Human-readable differences between two sets of row counts (empty when equal)."""
    want = {count.qualified: count.rows for count in expected}
    have = {count.qualified: count.rows for count in actual}
    problems = []
    for name in sorted(want.keys() | have.keys()):
        if name not in have:
            problems.append(f"{name}: missing (expected {want[name]} rows)")
        elif name not in want:
            problems.append(f"{name}: not in the backup's manifest ({have[name]} rows)")
        elif want[name] != have[name]:
            problems.append(f"{name}: {have[name]} rows, expected {want[name]}")
    return problems


def compare_object_counts(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """Object kinds (tables, indexes, ...) whose count differs from ``expected`` (empty when equal)."""
    return [
        f"{kind}: {actual.get(kind, 0)}, expected {count}"
        for kind, count in expected.items()
        if actual.get(kind, 0) != count
    ]


async def content_checksums(connection: asyncpg.Connection) -> dict[str, str]:
    """md5 of every table's rows (ordered by their text form), of large objects and of sequence values.

    Slow on big databases (reads and sorts everything); for demos, tests and deep verification.
    """
    sums: dict[str, str] = {}
    for schema, table in await connection.fetch(_TABLES):
        name = f"{quote_ident(schema)}.{quote_ident(table)}"
        sums[f"{schema}.{table}"] = await connection.fetchval(
            f"SELECT coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), 'empty') FROM ONLY {name} t"
        )
    sums["<large objects>"] = await connection.fetchval(
        "SELECT coalesce(md5(string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid)), 'none') "
        "FROM pg_largeobject_metadata"
    )
    for schema, sequence in await connection.fetch(
        "SELECT schemaname, sequencename FROM pg_sequences WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    ):
        row = await connection.fetchrow(f"SELECT last_value, is_called FROM {quote_ident(schema)}.{quote_ident(sequence)}")
        assert row is not None
        sums[f"{schema}.{sequence} (sequence)"] = f"{row['last_value']}/{row['is_called']}"
    return sums
