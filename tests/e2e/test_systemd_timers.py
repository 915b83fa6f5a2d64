"""The cron-only examples (docs/guides/cron.md): the systemd timer units verify, and the timers and the crontab
fire exactly when the example policy's schedules do (else the missed_run check would fire), running commands the
CLI accepts."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import pytest

from dbguardian.cli import COMMANDS
from dbguardian.cli.app import cli
from dbguardian.cron import next_fire, parse_cron
from dbguardian.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd-timers"
GUIDE = ROOT / "docs" / "guides" / "cron.md"
EXECUTABLE = "/opt/dbguardian/bin/dbguardian"
BASE = datetime(2026, 1, 1, tzinfo=UTC)

# The example policy's schedules (checked against config/policy.example.yaml below), by timer.
POLICY = load_policy(ROOT / "config" / "policy.example.yaml")
APP = POLICY.targets["app"]
SCHEDULES: dict[str, str | None] = {
    "dbguardian-backup-daily.timer": APP.schedules["daily"].cron,
    "dbguardian-backup-weekly.timer": APP.schedules["weekly"].cron,
    "dbguardian-backup-monthly.timer": APP.schedules["monthly"].cron,
    "dbguardian-check.timer": POLICY.health_rules("app").cron,
    "dbguardian-drill.timer": APP.drill.cron,
}


def test_the_example_schedules_are_the_seeds() -> None:
    assert SCHEDULES == {
        "dbguardian-backup-daily.timer": "0 2 * * *",
        "dbguardian-backup-weekly.timer": "0 3 * * 0",
        "dbguardian-backup-monthly.timer": "0 4 1 * *",
        "dbguardian-check.timer": "0 */6 * * *",
        "dbguardian-drill.timer": "0 6 2 * *",
    }
    assert POLICY.timezone == "UTC"
    assert {path.name for path in UNITS.glob("*.timer")} == set(SCHEDULES)


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return path


def _verify(directory: Path, replace: tuple[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``systemd-analyze verify`` of copies of the units whose dbguardian exists here; the lines about our units."""
    analyze = _analyze()
    ours = set()
    for unit in UNITS.iterdir():
        text = unit.read_text().replace(EXECUTABLE, str(Path(sys.executable).with_name("dbguardian")))
        if replace is not None:
            text = text.replace(*replace)
        (directory / unit.name).write_text(text)
        ours.add(unit.name)
    units = sorted(str(directory / name) for name in ours if not name.endswith("@.service"))  # templates: via timers
    result = subprocess.run([analyze, "verify", "--man=no", "--generators=no", *units],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    return result, [line for line in result.stderr.splitlines() if any(name in line for name in ours)]


def test_the_units_verify_without_warnings(tmp_path: Path) -> None:
    result, ours = _verify(tmp_path)
    assert not ours, "\n".join(ours)
    assert result.returncode == 0, result.stderr


def test_the_verify_check_sees_a_bad_key_in_the_template(tmp_path: Path) -> None:
    result, ours = _verify(tmp_path, ("Type=oneshot\n", "Type=oneshot\nNoSuchSetting=yes\n"))
    assert any("dbguardian-backup@.service" in line and "NoSuchSetting" in line for line in ours), result.stderr


def _unit(name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (UNITS / name).read_text().splitlines() if re.match(r"^\w+=", line))


def _cron_fires(expression: str, count: int) -> list[datetime]:
    fires, moment = [], BASE + timedelta(seconds=1)  # systemd counts from after the base time
    for _ in range(count):
        moment = next_fire(parse_cron(expression), moment, ZoneInfo(POLICY.timezone))  # at or after
        fires.append(moment)
        moment += timedelta(seconds=1)
    return fires


@pytest.mark.parametrize("timer", sorted(SCHEDULES))
def test_each_timer_fires_when_the_policy_schedule_does(timer: str) -> None:
    calendar = _unit(timer)["OnCalendar"]
    result = subprocess.run([_analyze(), "calendar", "--iterations=14", f"--base-time={BASE:%Y-%m-%d %H:%M:%S} UTC",
                             calendar], capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", result.stdout)
    fires = [datetime.fromisoformat(text).replace(tzinfo=UTC) for text in found]
    expression = SCHEDULES[timer]
    assert expression is not None
    assert fires == _cron_fires(expression, 14), result.stdout
    assert _unit(timer)["Persistent"] == "true"


def test_the_timers_start_the_right_commands() -> None:
    service = _unit("dbguardian-backup@.service")
    assert service["ExecStart"].endswith(f"{EXECUTABLE} backup app --tier %i")
    for tier in ("daily", "weekly", "monthly"):
        assert _unit(f"dbguardian-backup-{tier}.timer")["Unit"] == f"dbguardian-backup@{tier}.service"
    assert "check --notify --textfile " in _unit("dbguardian-check.service")["ExecStart"]
    assert _unit("dbguardian-drill.service")["ExecStart"].endswith(f"{EXECUTABLE} drill app")


def _crontab() -> list[tuple[str, list[str]]]:
    """(5 cron fields, the dbguardian argument list) of each job line in the guide's crontab block."""
    block = GUIDE.read_text().split("```crontab\n", 1)[1].split("```", 1)[0]
    jobs = []
    for line in block.splitlines():
        if not line or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        words = shlex.split(line)
        assert words[5] == "dbguardian", line  # the user field
        command = words[6:]
        command = command[command.index("dbguardian") :]
        jobs.append((" ".join(words[:5]), [word for word in command[1:] if not word.startswith(">")]))
    return jobs


def test_the_guides_crontab_runs_the_schedules_with_commands_the_cli_accepts() -> None:
    jobs = _crontab()
    assert sorted(cron for cron, _ in jobs) == sorted(str(cron) for cron in SCHEDULES.values())
    for _, argv in jobs:
        at = next(index for index, word in enumerate(argv) if word in COMMANDS)
        name, rest = argv[at], argv[at + 1 :]
        group = cli.make_context("dbguardian", argv[: at + 1])  # the global options, then the command
        command = cli.get_command(group, name)
        assert isinstance(command, click.Command), argv
        command.make_context(name, rest, parent=group)  # raises on an unknown option or a missing argument
    tiers = {argv[argv.index("--tier") + 1] for _, argv in jobs if "--tier" in argv}
    assert tiers == set(APP.schedules)
