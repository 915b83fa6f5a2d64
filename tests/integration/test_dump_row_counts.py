"""Row counts read off the real pg_dump's stream equal count(*) in the same snapshot, for awkward tables too."""

from __future__ import annotations

import random
import subprocess

from dbguardian.pipeline.dumpcount import DumpRowCounter, TableData
from tests.conftest import BACKUP_ROLE, PolicyFactory, Postgres
from tests.integration.test_backup_restore import manifest_of
from tests.support.pg import backup

AWKWARD_TABLES = """
CREATE SCHEMA "odd ""schema";
-- Values holding the bytes COPY escapes: newlines, carriage returns, tabs, backslashes, the end marker.
CREATE TABLE "odd ""schema"."Mixed Case" (id int, body text, raw bytea);
INSERT INTO "odd ""schema"."Mixed Case"
SELECT g, E'line one\\nline two\\r\\n\\ttabbed \\\\. \\\\.\\n' || repeat('é', g % 7), decode(repeat('0a', g % 5), 'hex')
FROM generate_series(1, 2500) g;
INSERT INTO "odd ""schema"."Mixed Case" VALUES (NULL, NULL, NULL), (0, E'\\\\.', '\\x00');
CREATE TABLE public.empty (id int);
CREATE TABLE public.no_columns ();
INSERT INTO public.no_columns SELECT FROM generate_series(1, 777);
CREATE UNLOGGED TABLE public.scratch AS SELECT g AS id FROM generate_series(1, 1234) g;
CREATE TABLE public.measures (at date, value int) PARTITION BY RANGE (at);
CREATE TABLE public.measures_2025 PARTITION OF public.measures FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.measures_2026 PARTITION OF public.measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.measures SELECT date '2025-06-01' + (g % 400), g FROM generate_series(1, 30000) g;
CREATE TABLE public.wide AS SELECT g AS id, repeat(md5(g::text), 200) AS payload FROM generate_series(1, 300) g;
"""


def server_counts(pg: Postgres, database: str) -> dict[TableData, int]:
    rows = pg.psql(
        """SELECT format('%s|%s', n.nspname, c.relname), c.oid::regclass FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND n.nspname NOT LIKE 'pg_toast%'""",
        database,
    )
    counts = {}
    for line in rows.splitlines():
        name, regclass = line.rsplit("|", 1)
        schema, table = name.split("|", 1)
        counts[TableData(schema, table)] = int(pg.psql(f"SELECT count(*) FROM ONLY {regclass}", database))
    return counts


def test_counts_of_the_real_pg_dump_stream_match_count_star(pg: Postgres, database: str) -> None:
    pg.psql(AWKWARD_TABLES, database)
    dump = subprocess.run(
        [str(pg.cluster.bin_dir / "pg_dump"), "--format=custom", "--compress=0", "-h", str(pg.cluster.socket_dir),
         "-p", str(pg.cluster.port), "-U", "postgres", database],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    expected = server_counts(pg, database)
    assert expected[TableData('odd "schema', "Mixed Case")] == 2502 and expected[TableData("public", "no_columns")] == 777

    rng = random.Random(15)
    for _ in range(5):
        counter = DumpRowCounter()
        at = 0
        while at < len(dump):
            step = rng.choice([1, 3, 5, 64, 4096, 65536, 1 << 20])
            counter.feed(dump[at : at + step])
            at += step
        assert counter.failure is None
        assert counter.counts() == expected


def test_a_backup_records_the_counts_it_read_off_the_dump(pg: Postgres, database: str, make_policy: PolicyFactory) -> None:
    pg.psql(f'SET ROLE "{BACKUP_ROLE}";' + AWKWARD_TABLES, database)  # the backup role's own tables
    policy = make_policy(database)
    manifest = manifest_of(policy, backup(policy))
    assert manifest.row_counts_from == "dump"
    recorded = {TableData(count.schema_name, count.table): count.rows for count in manifest.tables}
    assert recorded == server_counts(pg, database)
