"""``dbguardian migrations test``: every migration up, every one down again, every one up again.

On a scratch database (empty, or the target's latest backup restored into it: the realistic case,
with production's data shapes and sizes) each migration's file runs in one ``psql`` transaction with
``ON_ERROR_STOP``. After every step the schema (``schema dump``'s normalized text) is compared with
what it was at that point: a down must return exactly to the schema before its up (an index it
forgot to drop is named), and the second up must give exactly the schema of the first. The first
failing step ends the run; the scratch database is dropped whatever happened, unless ``keep``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbguardian.errors import DbguardianError, UsageError
from dbguardian.migrations.layout import Migration, discover
from dbguardian.pipeline.process import Child
from dbguardian.policy import Policy
from dbguardian.postgres import ConnectionInfo, find_tool, major_of, server_major_at
from dbguardian.restore.locate import locate, pg_restore_for
from dbguardian.restore.pg_restore import archive, run_pg_restore
from dbguardian.schemadump import changes, dump_schema, unified_diff
from dbguardian.scratch import admin_session, scratch_database, server_defaults

WORDS = {"added": "left behind", "removed": "missing", "changed": "different"}


@dataclass
class Step:
    migration: str
    step: str
    """``up``, ``down`` or ``up again``."""
    ok: bool
    seconds: float
    problem: str | None = None
    diff: str | None = None


@dataclass
class MigrationsReport:
    directory: str
    database: str
    base: str
    steps: list[Step] = field(default_factory=list)
    kept: bool = False

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)


def _difference(expected: str, actual: str, what: str) -> str:
    named = [
        f"{WORDS.get(change.action, change.action)}: {change.kind} {change.name}" for change in changes(expected, actual)
    ]
    return f"{what}: " + ("; ".join(named) if named else "the schema text differs")


async def _apply(psql: str, info: ConnectionInfo, path: Path) -> None:
    argv = [psql, "--no-password", "--no-psqlrc", "--quiet", "--single-transaction", "--set=ON_ERROR_STOP=1",
            f"--dbname={info.database}", f"--file={path}"]  # fmt: skip
    async with Child(argv, env=info.libpq_env(), stdout=False) as child:
        await child.wait_checked(fail_on_error_lines=False)


async def test_migrations(
    policy: Policy,
    directory: Path,
    server: ConnectionInfo,
    *,
    target_name: str | None = None,
    from_backup: str | None = None,
    identity: Path | None = None,
    keep: bool = False,
) -> MigrationsReport:
    layout = discover([directory])
    runnable = [migration for migration in layout.migrations if migration.up and migration.down]
    if not runnable:
        raise UsageError(f"{directory} holds no migration with both an up and a down file")
    if len(runnable) != len(layout.migrations) or layout.unmatched or layout.duplicates:
        raise UsageError(f"{directory} has files that do not pair up; run `dbguardian migrations lint {directory}` first")
    psql = (await find_tool("psql", await server_major_at(server), policy.pg_bin_dirs)).path
    name = f"dbg_migrations_{secrets.token_hex(4)}"
    report = MigrationsReport(str(directory), name, "empty database")
    async with (
        admin_session(server) as admin,
        scratch_database(admin, server, name, await server_defaults(admin)) as scratch,
    ):
        if from_backup is not None:
            if target_name is None:
                raise UsageError("--from-backup needs --target (whose backup to start from)")
            located = await locate(policy, target_name, from_backup)
            manifest = located.record.manifest
            report.base = f"backup {manifest.id} of {target_name}"
            pg_restore = await pg_restore_for(manifest, policy.pg_bin_dirs, await major_of(admin))
            async with archive(located, identity=identity, spool_dir=None) as source:
                await run_pg_restore(
                    pg_restore.path, scratch.info, source, no_owner=True, no_privileges=True, psql=pg_restore.psql
                )
        await _run(policy, psql, scratch.info, runnable, report)
        if keep:
            scratch.keep()
            report.kept = True
    return report


async def _run(
    policy: Policy, psql: str, info: ConnectionInfo, migrations: list[Migration], report: MigrationsReport
) -> None:
    async def snapshot() -> str:
        return await dump_schema(policy, "", server=info)

    async def step(migration: Migration, which: str, path: Path, expected: str | None, what: str) -> str | None:
        started = time.monotonic()
        try:
            await _apply(psql, info, path)
        except DbguardianError as error:
            report.steps.append(Step(migration.label, which, False, round(time.monotonic() - started, 3), str(error)))
            return None
        actual = await snapshot()
        seconds = round(time.monotonic() - started, 3)
        if expected is not None and actual != expected:
            problem = _difference(expected, actual, what)
            diff = unified_diff(expected, actual, "expected", f"after {which} {migration.label}")
            report.steps.append(Step(migration.label, which, False, seconds, problem, diff))
            return None
        report.steps.append(Step(migration.label, which, True, seconds))
        return actual

    before = [await snapshot()]
    for migration in migrations:  # up
        assert migration.up is not None
        after = await step(migration, "up", migration.up, None, "")
        if after is None:
            return
        before.append(after)
    for index in reversed(range(len(migrations))):  # down, newest first: back to the schema before each up
        migration = migrations[index]
        assert migration.down is not None
        what = f"down did not return to the schema before {migration.label}"
        if await step(migration, "down", migration.down, before[index], what) is None:
            return
    for index, migration in enumerate(migrations):  # up again: the same schema as the first time
        assert migration.up is not None
        what = f"the second up of {migration.label} gave another schema than the first"
        if await step(migration, "up again", migration.up, before[index + 1], what) is None:
            return
