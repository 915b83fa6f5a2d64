"""Schema text normalization and what a drift changed (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbguardian.schemadump import changes, normalize

DUMP = """--
-- PostgreSQL database dump
--

\\restrict 3kT9Xw2bQ

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;


--
-- Name: orders; Type: TABLE; Schema: shop; Owner: backup
--

CREATE TABLE shop.orders (
    id integer NOT NULL,
    customer_id integer,
    CONSTRAINT positive CHECK ((id > 0))
);

CREATE INDEX orders_customer_idx ON shop.orders USING btree (customer_id);

\\unrestrict 3kT9Xw2bQ

"""


def test_normalize_drops_versions_restrict_keys_owners_and_blank_runs() -> None:
    text = normalize(DUMP)
    assert "15.18" not in text and "restrict" not in text and "Owner: backup" not in text
    assert "; Owner: -" in text and "\n\n\n" not in text
    assert text.endswith("(customer_id);\n")
    # Another server version and key, same schema: the same bytes.
    other = DUMP.replace("15.18", "16.4").replace("3kT9Xw2bQ", "Zz81").replace("Owner: backup", "Owner: app")
    assert normalize(other) == text
    assert "Owner: backup" in normalize(DUMP, with_privileges=True)


def test_changes_name_added_and_removed_tables_columns_and_indexes() -> None:
    before = normalize(DUMP)
    after = before.replace("    customer_id integer,\n", "    customer_id integer,\n    note text,\n")
    after = after.replace("CREATE INDEX orders_customer_idx", "CREATE INDEX orders_by_customer")
    after += "\nCREATE TABLE shop.refunds (\n    id integer\n);\n"
    assert [str(change) for change in changes(before, after)] == [
        "added index orders_by_customer",
        "added table shop.refunds",
        "removed index orders_customer_idx",
        "added column shop.orders.note",
    ]
    retyped = before.replace("    customer_id integer,", "    customer_id bigint,")
    assert [str(change) for change in changes(before, retyped)] == ["changed table shop.orders"]
    assert changes(before, before) == []


def test_a_drift_verdict_lists_the_first_changes_and_counts_the_rest() -> None:
    from dbguardian.jobs.schema_drift import describe

    found = [f"added table t{number}" for number in range(12)]
    text = describe(found, "db/schema.sql")
    assert text.startswith("differs from db/schema.sql: added table t0; ") and text.endswith("t9 and 2 more")
    assert describe([], "f.sql") == "the schema differs from f.sql (see `dbguardian schema diff`)"


def test_the_schema_file_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    from dbguardian.policy.schema import SchemaConfig

    config = SchemaConfig.model_validate({"file": "db/schema.sql", "cron": "0 7 * * *"})
    assert config.path(tmp_path / "policy.yaml") == tmp_path / "db" / "schema.sql"
    assert config.path(None) == Path("db/schema.sql")
    absolute = SchemaConfig.model_validate({"file": "/srv/schema.sql", "every": "1h"})
    assert absolute.path(tmp_path / "policy.yaml") == Path("/srv/schema.sql")
    with pytest.raises(ValueError, match="exactly one of 'cron' or 'every'"):
        SchemaConfig.model_validate({"file": "x.sql"})
