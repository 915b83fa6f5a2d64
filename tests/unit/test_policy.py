from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbguardian.errors import PolicyError
from dbguardian.policy import load_policy, parse_policy, summarize
from tests.conftest import run_cli
from tests.support.cli import invoke_cli

MINIMAL = """\
version: 1
state_dir: /var/lib/dbguardian
storage:
  local: {type: local, path: /var/lib/dbguardian/backups}
targets:
  app:
    dsn: postgresql://backup@127.0.0.1:5432/app
    storage: [local]
    compression: {algorithm: zstd, level: 3}     # or gzip with level 1-9; default zstd 3
    schedules:
      daily: {cron: "0 2 * * *", keep: 7}
"""


def minimal() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(MINIMAL))


def test_minimal_policy_from_the_issue_works(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(MINIMAL)
    policy = load_policy(path)
    target = policy.targets["app"]
    assert target.compression.algorithm == "zstd" and target.compression.effective_level == 3
    assert target.schedules["daily"].cron == "0 2 * * *" and target.schedules["daily"].keep == 7
    assert summarize(policy).startswith("policy ok: 1 target(s) (app)")


def test_defaults() -> None:
    data = minimal()
    del data["targets"]["app"]["compression"]
    policy = parse_policy(data)
    assert policy.targets["app"].compression.algorithm == "zstd"
    assert policy.targets["app"].compression.effective_level == 3
    data["targets"]["app"]["compression"] = {"algorithm": "gzip"}
    assert parse_policy(data).targets["app"].compression.effective_level == 6


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

BAD_CASES = [
    ("targets.app.schedules.daily.cron", "0 2 * *", "targets.app.schedules.daily.cron: expected 5 fields"),
    ("targets.app.schedules.daily.cron", "0 25 * * *", "targets.app.schedules.daily.cron: invalid cron expression"),
    (
        "targets.app.schedules.daily.keep",
        0,
        "targets.app.schedules.daily.keep: Input should be greater than or equal to 1",
    ),
    ("targets.app.schedules.daily.every", "10s", "targets.app.schedules.daily: set exactly one of 'cron' or 'every'"),
    (
        "targets.app.schedules.daily.every",
        "10 parsecs",
        "targets.app.schedules.daily.every: '10 parsecs' is not a duration",
    ),
    (
        "targets.app.compression",
        {"algorithm": "gzip", "level": 12},
        "targets.app.compression: level 12 is out of range for gzip (1-9)",
    ),
    (
        "targets.app.compression",
        {"algorithm": "lz4"},
        "targets.app.compression.algorithm: Input should be 'zstd', 'gzip' or 'none'",
    ),
    ("targets.app.dsn", "mysql://x@y/z", "targets.app.dsn: must be a URL starting with postgresql://"),
    ("targets.app.dsn", "postgresql://backup@127.0.0.1:5432/", "targets.app.dsn: names no database"),
    ("targets.app.storage", ["offsite"], "targets.app.storage.0: unknown storage 'offsite' (defined: local)"),
    ("targets.app.storage", [], "targets.app.storage: List should have at least 1 item"),
    ("targets.app.colour", "blue", "targets.app.colour: unknown key"),
    ("targets.app.dsn", _DELETE, "targets.app.dsn: required key is missing"),
    ("storage.local.type", "ftp", "storage.local: unknown type 'ftp'; expected one of: 'local', 's3'"),
    ("storage.local.path", "relative/dir", "storage.local.path: must be an absolute path"),
    ("state_dir", "var/lib", "state_dir: must be an absolute path"),
    ("version", 2, "version: Input should be 1"),
    ("timezone", "Mars/Olympus", "timezone: unknown time zone 'Mars/Olympus'"),
    ("leftover_grace", "soon", "leftover_grace: 'soon' is not a duration"),
    ("retention", {"keep": 3}, "retention: unknown key"),
    (
        "targets",
        {"bad name!": {"dsn": "postgresql://u@h/db", "storage": ["local"]}},
        "targets: name 'bad name!' must be letters",
    ),
    (
        "targets.app.schedules",
        {"manual": {"cron": "* * * * *"}},
        "targets.app.schedules: tier name 'manual' is reserved",
    ),
]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    BAD_CASES,
    ids=[case[2].split(":")[0] + "-" + str(i) for i, case in enumerate(BAD_CASES)],
)
def test_bad_policy_names_the_field(field: str, value: Any, expected: str) -> None:
    data = minimal()
    _set(data, field, value)
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    data = minimal()
    data["targets"]["app"]["schedules"]["daily"]["cron"] = "nope"
    data["targets"]["app"]["typo"] = 1
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert len(caught.value.problems) == 2


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBGUARDIAN_TARGETS__APP__PASSWORD", "from-env")
    monkeypatch.setenv("DBGUARDIAN_STATE_DIR", "/srv/state")
    monkeypatch.setenv("DBGUARDIAN_POLICY", "/some/where.yaml")  # the CLI's own variable is not a policy key
    policy = parse_policy(minimal())
    assert policy.state_dir == Path("/srv/state")
    assert policy.targets["app"].secret("password").resolve() == "from-env"
    assert "from-env" not in repr(policy)


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    data = minimal()
    data["targets"]["app"]["password_file"] = str(secret)
    assert parse_policy(data).targets["app"].secret("password").resolve() == "s3cret"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("version: 1\nstate_dir: [unclosed\n", "policy: YAML syntax error at line"),
        ("- just\n- a list\n", "policy: the file must be a YAML mapping"),
    ],
)
def test_unparseable_files(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(content)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.problems[0].startswith(expected)


def test_cli_bad_policy_exit_2_one_line_per_problem(tmp_path: Path) -> None:
    data = minimal()
    data["targets"]["app"]["schedules"]["daily"]["cron"] = "0 2 * *"
    data["targets"]["app"]["colour"] = "blue"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_cli(path, "check-policy")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert sorted(lines) == [
        "targets.app.colour: unknown key",
        "targets.app.schedules.daily.cron: expected 5 fields (minute hour day month weekday), got 4",
    ]


def test_cli_missing_policy_file(tmp_path: Path) -> None:
    result = invoke_cli(tmp_path / "nope.yaml", "check-policy")
    assert result.returncode == 2
    assert result.stderr.strip() == f"policy: cannot read {tmp_path / 'nope.yaml'}: No such file or directory"


def test_cli_policy_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(MINIMAL)
    result = invoke_cli(None, "check-policy", DBGUARDIAN_POLICY=str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("policy ok: 1 target(s) (app), 1 storage(s) (local), 1 schedule(s)")


def test_documented_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "policy.example.yaml"
    policy = load_policy(example)
    assert set(policy.targets["app"].schedules) == {"daily", "weekly", "monthly"}
    # Every top-level and target key the models know is documented in the example.
    text = example.read_text()
    from dbguardian.policy import Policy, TargetConfig

    for name, field in [*Policy.model_fields.items(), *TargetConfig.model_fields.items()]:
        key = field.alias or name
        assert f"{key}:" in text, f"{key} is not documented in config/policy.example.yaml"


@pytest.mark.parametrize(
    ("section", "value", "expected"),
    [
        ("alerts", {"webhook": {"url": "not-a-url"}}, "alerts.webhook.url: must be an http(s) URL"),
        ("alerts", {"slack": {"webhook_url": "ftp://hooks.example/x"}}, "alerts.slack.webhook_url: must be an http(s) URL"),
        ("pings", {"fail": "hc-ping.com/uuid"}, "targets.app.pings.fail: must be an http(s) URL"),
    ],
)
def test_urls_must_be_http(section: str, value: Any, expected: str) -> None:
    data = minimal()
    (data["targets"]["app"] if section == "pings" else data)[section] = value
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert caught.value.problems[0].startswith(expected), caught.value.problems
    assert "not-a-url" not in caught.value.problems[0] and "hc-ping" not in caught.value.problems[0]  # secrets


def test_cli_rejects_a_webhook_that_is_not_a_url(tmp_path: Path) -> None:
    data = minimal()
    data["alerts"] = {"webhook": {"url": "not-a-url"}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    result = invoke_cli(path, "check-policy")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["alerts.webhook.url: must be an http(s) URL (https://host/path)"]


def test_secrets_resolve_one_way(tmp_path: Path) -> None:
    from dbguardian.errors import SecretUnavailable

    hook = tmp_path / "hook"
    hook.write_text("https://hooks.example/T0/B0/token\n")
    data = minimal()
    data["alerts"] = {"webhook": {"url_file": str(hook)}, "email": {"host": "smtp", "sender": "a@b", "to": ["c@d"]}}
    data["targets"]["app"]["password_file"] = str(tmp_path / "missing")
    policy = parse_policy(data)
    assert policy.alerts.webhook is not None and policy.alerts.email is not None
    assert policy.alerts.webhook.secret("url").resolve() == "https://hooks.example/T0/B0/token"
    assert policy.alerts.email.secret("password").resolve() is None  # not configured
    with pytest.raises(SecretUnavailable, match=r"^cannot read password_file .*/missing: No such file"):
        policy.targets["app"].secret("password").resolve()
    hook.write_text("not a url\n")  # a file is read when resolved (rotation), and checked then
    with pytest.raises(
        SecretUnavailable, match=r"^alerts\.webhook\.url_file .*/hook: its content must be an http"
    ) as caught:
        policy.alerts.webhook.secret("url").resolve()
    assert "not a url" not in str(caught.value)


def test_one_trigger_model_everywhere() -> None:
    cases = [
        ("targets.app.schedules.daily", {"every": "0.5s"}, "targets.app.schedules.daily.every: must be at least 1s"),
        ("targets.app.verify", {"cron": "0 3 * * *", "every": "1h"}, "targets.app.verify: set exactly one of"),
        ("targets.app.verify", {"all": True}, "targets.app.verify: set exactly one of 'cron' or 'every'"),
        ("targets.app.drill", {"cron": "0 3 * *"}, "targets.app.drill.cron: expected 5 fields"),
        ("targets.app.drill", {"cron": "0 3 * * *", "every": "1h"}, "targets.app.drill: set at most one of"),
        ("health", {"every": "0s"}, "health.every: must be at least 1s"),
        ("health", {"cron": "61 * * * *"}, "health.cron: invalid cron expression"),
    ]
    for path, value, expected in cases:
        data = minimal()
        _set(data, path, value)
        with pytest.raises(PolicyError) as caught:
            parse_policy(data)
        assert any(problem.startswith(expected) for problem in caught.value.problems), (path, caught.value.problems)


def test_health_integrity_budget_layers() -> None:
    from datetime import timedelta

    data = minimal()
    assert parse_policy(data).health_rules("app").integrity.model_dump() == {
        "every": timedelta(hours=24),
        "max_bytes": 1024**3,
    }
    data["health"] = {"integrity": {"every": "12h", "max_bytes": "1GB"}}
    data["targets"]["app"]["health"] = {"integrity": {"max_bytes": "10MB"}}
    rules = parse_policy(data).health_rules("app")
    assert (rules.integrity.every, rules.integrity.max_bytes) == (timedelta(hours=12), 10 * 1024**2)
    data["targets"]["app"]["health"] = {"integrity": {"max_bytes": -1}}
    with pytest.raises(PolicyError, match=r"targets\.app\.health\.integrity\.max_bytes"):
        parse_policy(data)


def test_policy_target_lookup() -> None:
    from dbguardian.errors import UsageError

    policy = parse_policy(minimal())
    assert policy.target("app") is policy.targets["app"]
    with pytest.raises(UsageError, match=r"^unknown target 'nope' \(policy defines: app\)$"):
        policy.target("nope")


def test_storage_entries_are_validated_by_their_backend() -> None:
    data = minimal()
    data["storage"]["offsite"] = {"type": "s3", "bucket": "b", "part_size": "1MB", "surprise": 1}
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert sorted(caught.value.problems) == [
        "storage.offsite.bucket: String should have at least 3 characters",
        "storage.offsite.part_size: must be between 5MB and 5GB (S3 multipart limits)",
        "storage.offsite.surprise: unknown key",
    ]
    data["storage"]["offsite"] = {"bucket": "bucket"}
    with pytest.raises(PolicyError, match=r"storage\.offsite: 'type' is missing; expected one of: 'local', 's3'"):
        parse_policy(data)
    data["storage"]["offsite"] = {"type": "s3", "bucket": "bucket", "access_key_id_file": "/k"}
    with pytest.raises(PolicyError, match=r"storage\.offsite: set both access_key_id_file and secret_access_key_file"):
        parse_policy(data)
    data["storage"]["offsite"] = {"type": "s3", "bucket": "bucket"}
    policy = parse_policy(data)
    assert policy.model_dump()["storage"]["offsite"]["bucket"] == "bucket"  # dumped as its own model


def test_validating_an_s3_entry_does_not_import_the_s3_client() -> None:
    """aioboto3 costs ~0.2 s and tens of MB: only a process that opens an S3 storage may import it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from dbguardian.policy import parse_policy\n"
        "parse_policy({'version': 1, 'state_dir': '/var/lib/x',\n"
        "              'storage': {'offsite': {'type': 's3', 'bucket': 'bucket'}},\n"
        "              'targets': {'app': {'dsn': 'postgresql://u@h:5432/app', 'storage': ['offsite']}}})\n"
        "print(sorted(name for name in sys.modules if name.startswith(('aioboto3', 'aiobotocore', 'botocore'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_compression_level_defaults_without_mutation() -> None:
    from dbguardian.policy import CompressionConfig

    assert CompressionConfig().level == 3 and CompressionConfig(algorithm="gzip").effective_level == 6
    assert CompressionConfig(algorithm="none").level == 0
    assert CompressionConfig(algorithm="zstd", level=19).effective_level == 19


def test_the_storage_registry_the_policy_finds_by_name_is_there() -> None:
    """policy/storage.py imports the registry by name (the one upward import, invisible to import-linter):
    a rename must fail here, not at the first policy load in production."""
    import importlib

    from dbguardian.policy.storage import REGISTRY_MODULE

    registry = importlib.import_module(REGISTRY_MODULE)
    assert {"local", "s3", "gcs"} <= set(registry.config_models())  # (more backends may come; these must be there)
