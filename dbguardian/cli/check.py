from __future__ import annotations

import json
from pathlib import Path

import click

from dbguardian.cli.common import policy_from, run_async


@click.command("check")
@click.argument("target", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print every verdict as JSON.")
@click.option(
    "--notify",
    is_flag=True,
    help="Alert as the daemon does: firing, reminders, resolved, through the policy's channels and its alert state.",
)
@click.option(
    "--textfile",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the health job's metrics to this file (Prometheus text format, atomically) for node_exporter.",
)
@click.pass_context
def command(ctx: click.Context, target: str | None, as_json: bool, notify: bool, textfile: Path | None) -> None:
    """Run the health checks once (exit 0 healthy, 1 not); for cron, Nagios and humans.

    ``--notify`` and ``--textfile`` make it the daemon's health job for installs without the daemon
    (docs/guides/cron.md); alerting trouble is reported on stderr and leaves the exit status to the checks.
    """
    from dbguardian.oneshot import check, render_metrics, write_textfile

    policy = policy_from(ctx)
    if target is not None:
        policy.target(target)  # unknown target: a usage error naming the defined ones
    names = [target] if target else sorted(policy.targets)
    result = run_async(lambda: check(policy, names, notify=notify, gauges=textfile is not None))
    verdicts = result.verdicts
    if textfile is not None:
        write_textfile(textfile, render_metrics(result.observations, alerts_firing=result.alerts_firing))
    for problem in result.problems:
        click.echo(f"warning: {problem}", err=True)
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
