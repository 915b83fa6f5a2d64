"""The scheduled schema drift check: the target's live schema against its committed ``schema dump`` file.

Its verdict (``schema_drift``) goes through the alert state machines like every check, so a drift is
one message naming what changed (tables, columns, indexes added or removed) and one resolved message
once the file or the database is brought in line; ``dbguardian_schema_drift{target}`` is 1 while it drifts.
"""

from __future__ import annotations

from dbguardian.errors import DbguardianError
from dbguardian.health import Verdict
from dbguardian.jobs.outcome import JobContext, JobKind, JobOutcome
from dbguardian.policy import Policy
from dbguardian.schedule import JobSpec
from dbguardian.schemadump import changes, dump_schema, normalize

CHECK = "schema_drift"
MAX_LISTED = 10


def specs(policy: Policy) -> list[JobSpec]:
    return [
        JobSpec(CHECK, name, "-", target.schema_check.cron, target.schema_check.every, policy.timezone)
        for name, target in policy.targets.items()
        if target.schema_check is not None
    ]


def describe(found: list[str], file: str) -> str:
    """The observed text of a drift verdict: what changed, the first few of it."""
    if not found:
        return f"the schema differs from {file} (see `dbguardian schema diff`)"
    more = f" and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
    return f"differs from {file}: " + "; ".join(found[:MAX_LISTED]) + more


async def run(ctx: JobContext, spec: JobSpec) -> JobOutcome:
    config = ctx.policy.targets[spec.target].schema_check
    assert config is not None
    path = config.path(ctx.policy.source_path)
    expected = f"the schema equals {path}"
    outcome = JobOutcome()
    try:
        committed = normalize(path.read_text(), with_privileges=config.with_privileges)
    except OSError as error:
        outcome.result = "failure"
        outcome.verdicts.append(Verdict(spec.target, CHECK, False, f"cannot read {path}: {error.strerror}", expected))
        return outcome
    try:
        live = await dump_schema(ctx.policy, spec.target, with_privileges=config.with_privileges)
    except DbguardianError as error:
        outcome.result = "failure"
        outcome.verdicts.append(Verdict(spec.target, CHECK, False, f"cannot dump the schema: {error}", expected))
        return outcome
    drifted = live != committed
    outcome.observe("schema_drift", spec.target, value=1 if drifted else 0)
    observed = describe([str(change) for change in changes(committed, live)], str(path)) if drifted else "equal"
    outcome.verdicts.append(Verdict(spec.target, CHECK, not drifted, observed, expected))
    return outcome


KIND = JobKind(CHECK, "scheduled", specs, run, coalesce=True)
