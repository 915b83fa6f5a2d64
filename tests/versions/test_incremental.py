"""Incremental base backups on PostgreSQL 18: a full one, incrementals on top, a point-in-time restore of
the newest through its chain (pg_combinebackup), a broken chain refused by name, and a full backup (with
a warning) where the server keeps no WAL summaries."""

from __future__ import annotations

import json
from pathlib import Path

from dbguardian.catalog import keys
from dbguardian.throwaway import free_port
from tests.conftest import run_cli
from tests.integration.test_pitr import Restored, give_to_server_user
from tests.integration.test_pitr_drill import run_as_server_user
from tests.support.majors import NEWEST
from tests.versions.test_majors import ROLE, archiving_app

CHECKSUM = "SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM grow t"
INCR = {
    "base": {"cron": "0 3 * * 0", "keep": 1, "kind": "physical"},
    "incr": {"cron": "0 3 * * 1-6", "keep": 7, "kind": "physical", "incremental": True},
}


def manifest_of(work: Path, backup_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((work / "backups" / keys.manifest_key("app", backup_id)).read_text())
    return data


def test_incremental_chain_backup_and_point_in_time_restore() -> None:
    restored: list[Restored] = []
    with archiving_app(NEWEST, schedules=INCR, summarize_wal="on") as app:
        server, work, policy, env = app.server, app.work, app.policy, app.env
        try:
            server.psql(f'CREATE TABLE grow (id int PRIMARY KEY, v text); ALTER TABLE grow OWNER TO "{ROLE}"')
            server.psql("INSERT INTO grow SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            server.psql("GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO backup")

            def backup(tier: str) -> tuple[str, str]:
                result = run_cli(policy, "backup", "app", "--tier", tier, "--no-prune")
                assert result.returncode == 0, result.stderr
                return result.stdout.strip().splitlines()[-1], result.stderr

            full, _ = backup("base")
            server.psql("UPDATE grow SET v = 'changed' WHERE id <= 100; INSERT INTO grow VALUES (20001, 'new')")
            first, _ = backup("incr")
            server.psql("DELETE FROM grow WHERE id BETWEEN 200 AND 300")
            second, _ = backup("incr")

            manifests = {backup_id: manifest_of(work, backup_id) for backup_id in (full, first, second)}
            assert manifests[full]["format"] == 2 and manifests[full].get("incremental_of") is None
            assert (manifests[first]["format"], manifests[first]["incremental_of"], manifests[first]["chain"]) == (
                3, full, [full])  # fmt: skip
            assert (manifests[second]["incremental_of"], manifests[second]["chain"]) == (first, [full, first])
            # Only what changed: an incremental stores a small part of the full backup.
            assert int(str(manifests[second]["size_bytes"])) * 4 < int(str(manifests[full]["size_bytes"]))

            at_point = server.psql(CHECKSUM)
            point = run_cli(policy, "restore-point", "app", "after_second", "--wait", "--json", timeout=120, **env)
            assert point.returncode == 0, point.stderr
            server.psql("DROP TABLE grow")
            give_to_server_user(work)
            pitr = run_cli(policy, "restore", "app", "--pitr", "--pgdata", str(work / "pitr"), "--to-name", "after_second",
                           "--start", "--port", str(free_port()), "--json", timeout=180, **env)  # fmt: skip
            assert pitr.returncode == 0, pitr.stderr[-3000:]
            copy = Restored(json.loads(pitr.stdout))
            restored.append(copy)
            assert copy.report["backup_id"] == second
            assert copy.psql(CHECKSUM) == at_point
            assert not list(work.glob(".dbguardian-combine-*")), "the chain's directories are removed"
            listing = run_cli(policy, "list", "app")
            assert f"(incremental of {first}, chain of 3)" in listing.stdout, listing.stdout

            # A drill restores the newest base backup: through the whole chain.
            give_to_server_user(server.password_file)
            drill = run_as_server_user(env, policy, "drill", "app", "--json")
            assert drill.returncode == 0, (drill.stdout + drill.stderr)[-3000:]
            report = json.loads(drill.stdout[: drill.stdout.rindex("}") + 1])
            assert report["ok"] is True and report["backup_id"] == second

            # A newer full backup: the tier keeps one, but the old full stays while its incrementals do.
            newer_full, _ = backup("base")
            dry = run_cli(policy, "prune", "app", "--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert f"{full}  base     kept: incremental {first} is based on it" in dry.stdout, dry.stdout
            plan = run_cli(policy, "plan")
            assert "retention keeps for incremental chains: 1" in plan.stdout and "(incremental base backups)" in plan.stdout

            # A damaged link: the restore fails on its checksum and leaves nothing behind.
            stored = next((work / "backups" / "app" / first).glob("base.tar*"))
            original = stored.read_bytes()
            stored.write_bytes(original[:1000] + bytes([original[1000] ^ 0xFF]) + original[1001:])
            damaged = run_cli(policy, "restore", "app", second, "--pitr", "--pgdata", str(work / "damaged"),
                              "--to-latest", timeout=180, **env)  # fmt: skip
            assert damaged.returncode != 0 and "sha256" in damaged.stderr, damaged.stderr[-2000:]
            assert not (work / "damaged").exists() or not any((work / "damaged").iterdir())
            assert not list(work.glob(".dbguardian-combine-*"))
            stored.write_bytes(original)

            # The middle link gone from the storage: the newest incremental is refused, naming it.
            (work / "backups" / keys.manifest_key("app", first)).unlink()
            give_to_server_user(work)
            broken = run_cli(policy, "restore", "app", second, "--pitr", "--pgdata", str(work / "broken"),
                             "--to-latest", timeout=180, **env)  # fmt: skip
            assert broken.returncode != 0
            assert f"the backup it is based on, {first}, is not there (chain_broken)" in broken.stderr, broken.stderr
            status = run_cli(policy, "wal", "status", "app", "--json")
            checks = {check["check"]: check for check in json.loads(status.stdout)["targets"][0]["checks"]}
            assert checks["chain_broken"]["ok"] is False
            assert checks["chain_broken"]["observed"] == f"local: {second} (needs {first})"
            assert newer_full  # the newest full backup restores on its own
        finally:
            for copy in restored:
                copy.stop()


def test_without_wal_summaries_an_incremental_tier_takes_a_full_backup_and_warns() -> None:
    with archiving_app(NEWEST, sample_data=False, schedules=INCR) as app:
        server, work, policy = app.server, app.work, app.policy
        assert "summarize_wal = on" in app.archiving  # advised for the incremental tier
        server.psql("ALTER SYSTEM SET summarize_wal = off; SELECT pg_reload_conf()", "postgres")  # not followed
        assert run_cli(policy, "backup", "app", "--tier", "base", "--no-prune").returncode == 0
        result = run_cli(policy, "backup", "app", "--tier", "incr", "--no-prune")
        assert result.returncode == 0, result.stderr
        assert "taking a full base backup instead of an incremental one" in result.stderr
        assert "summarize_wal is off" in result.stderr
        manifest = manifest_of(work, result.stdout.strip().splitlines()[-1])
        assert manifest.get("incremental_of") is None and manifest["tier"] == "incr"

        # Summaries switched on: the next incremental builds on the newest base backup, and its small size
        # alerts nothing (the size checks judge whole backups only).
        server.psql("ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()", "postgres")
        then = run_cli(policy, "backup", "app", "--tier", "incr", "--no-prune")
        assert then.returncode == 0, then.stderr
        assert manifest_of(work, then.stdout.strip().splitlines()[-1])["incremental_of"] == manifest["id"]
        assert '"check": "too_small"' not in then.stderr and '"check": "shrunk"' not in then.stderr, then.stderr
