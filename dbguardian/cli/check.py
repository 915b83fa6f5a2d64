from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from dbguardian.cli.common import policy_from, run_async
from dbguardian.health import Verdict
from dbguardian.jobs.health import check_target
from dbguardian.jobs.registry import job_specs


@click.command("check")
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print every verdict as JSON.")
@click.pass_context
def command(ctx: click.Context, target: str | None, as_json: bool) -> None:
    """Run the health checks once (exit 0 healthy, 1 not); for cron, Nagios and humans."""
    policy = policy_from(ctx)
    if target is not None:
        policy.target(target)  # unknown target: a usage error naming the defined ones
    names = [target] if target else sorted(policy.targets)
    now = datetime.now(UTC)
    specs = job_specs(policy)

    async def all_checks() -> list[Verdict]:
        verdicts: list[Verdict] = []
        for name in names:
            verdicts += (await check_target(policy, name, now, specs))[0]
        return verdicts

    verdicts = run_async(all_checks)
    healthy = all(verdict.ok for verdict in verdicts)
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "checks": [v.__dict__ for v in verdicts]}, indent=2))
    else:
        for verdict in verdicts:
            mark = "OK  " if verdict.ok else "FAIL"
            line = f"{mark} {verdict.target:<12} {verdict.check:<22} {verdict.observed}"
            click.echo(line if verdict.ok else f"{line} (expected: {verdict.expected})")
        click.echo("healthy" if healthy else "UNHEALTHY")
    ctx.exit(0 if healthy else 1)
