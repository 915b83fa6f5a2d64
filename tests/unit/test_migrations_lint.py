"""`migrations lint` on fixture files: each rule caught, with file and line (pglast parses the SQL)."""

from __future__ import annotations

from pathlib import Path

from dbguardian.migrations.layout import discover, sequence_problems
from dbguardian.migrations.lint import lint


def files(root: Path, contents: dict[str, str]) -> Path:
    for name, text in contents.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def findings(root: Path) -> list[str]:
    return [f"{item.path.relative_to(root)}:{item.line}: {item.severity}: {item.message}" for item in lint([root])]


def test_a_clean_directory_has_no_findings_in_either_layout(tmp_path: Path) -> None:
    root = files(tmp_path, {
        "001_create_users.up.sql": "-- users\nCREATE TABLE users (id int);\n",
        "001_create_users.down.sql": "-- undo\nDROP TABLE IF EXISTS users;\n",
        "002_add_email/up.sql": "/* email */ ALTER TABLE users ADD COLUMN email text;\n",
        "002_add_email/down.sql": "-- undo\nALTER TABLE users DROP COLUMN IF EXISTS email;\n",
    })  # fmt: skip
    assert findings(root) == []
    assert [migration.label for migration in discover([root]).migrations] == ["001_create_users", "002_add_email"]


def test_every_rule_is_reported_with_its_line(tmp_path: Path) -> None:
    root = files(tmp_path, {
        "001_Users.up.sql": "-- users\nCREATE TABLE users (id int);\n",
        "001_Users.down.sql": "-- undo\nDROP TABLE users CASCADE;\n",
        "003_orders.up.sql": "CREATE TABLE orders (id int);\nBEGIN;\nCOMMIT;\n",
        "003_orders.down.sql": "-- undo\n\nALTER TABLE orders DROP COLUMN id CASCADE;\nSELECT 'DROP TABLE x';\n",
        "004_typo.up.sql": "-- typo\nCREATE TABLE t (id int);\nCREAT TABLE u (id int);\n",
        "notes.sql": "-- not a migration\n",
    })  # fmt: skip
    found = findings(root)
    assert found == [
        ".:1: error: gap in the sequence: 001_Users is followed by 003_orders",
        "001_Users.down.sql:2: warning: DROP without IF EXISTS",
        "001_Users.down.sql:2: warning: DROP ... CASCADE also drops everything that depends on it",
        "001_Users.up.sql:1: error: name 'Users' is not snake_case (NNN_snake_case)",
        "003_orders.down.sql:3: warning: ALTER TABLE ... DROP without IF EXISTS",
        "003_orders.down.sql:3: warning: ALTER TABLE ... DROP ... CASCADE",
        "003_orders.up.sql:1: warning: no comment header saying what the migration does",
        "003_orders.up.sql:2: error: explicit transaction control (BEGIN/COMMIT/ROLLBACK): each migration file already "
        "runs in one transaction",
        "003_orders.up.sql:3: error: explicit transaction control (BEGIN/COMMIT/ROLLBACK): each migration file already "
        "runs in one transaction",
        "004_typo.up.sql:1: error: 004_typo has an up but no down migration",
        '004_typo.up.sql:3: error: does not parse: syntax error at or near "CREAT"',
        "notes.sql:1: error: not a migration file name: NNN_name.up.sql / NNN_name.down.sql or NNN_name/up.sql / "
        "NNN_name/down.sql",
    ]  # the DROP inside a string literal is no statement: not reported


def test_duplicate_versions_and_timestamps(tmp_path: Path) -> None:
    root = files(tmp_path, {
        "002_a.up.sql": "-- a\nSELECT 1;\n", "002_a.down.sql": "-- a\nSELECT 1;\n",
        "002_b.up.sql": "-- b\nSELECT 1;\n", "002_b.down.sql": "-- b\nSELECT 1;\n",
        "20260101120000_c.up.sql": "-- c\nSELECT 1;\n", "20260101120000_c.down.sql": "-- c\nSELECT 1;\n",
        "20260301080000_d.up.sql": "-- d\nSELECT 1;\n", "20260301080000_d.down.sql": "-- d\nSELECT 1;\n",
    })  # fmt: skip
    problems = sequence_problems(discover([root]).migrations)
    # Timestamp versions have no sequence: neither the switch to them nor their distance is a gap.
    assert problems == ["002_a and 002_b have the same version 002"]


def test_the_pre_commit_hook_runs_the_lint_command(tmp_path: Path) -> None:
    import yaml
    from click.testing import CliRunner

    from dbguardian.cli import cli

    [hook] = yaml.safe_load((Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "dbguardian-migrations-lint" and hook["language"] == "python" and not hook["pass_filenames"]
    program, *words = hook["entry"].split()
    assert program == "dbguardian"
    root = files(tmp_path, {"001_a.up.sql": "-- a\nSELECT 1;\n"})
    result = CliRunner().invoke(cli, [*words, str(root)])
    assert result.exit_code == 1 and "has an up but no down migration" in result.output
    files(tmp_path, {"001_a.down.sql": "-- a\nSELECT 1;\n"})
    assert CliRunner().invoke(cli, [*words, str(root)]).exit_code == 0
