"""Packaging: the systemd unit, the container image and the docker-compose stack.

External checkers (Debian packages): ``systemd-analyze`` (systemd), ``docker-compose`` (docker-compose),
``promtool`` (prometheus). A test that needs one skips, naming the package, only when it is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from dbguardian.policy import Policy, load_policy
from dbguardian.storage.local import LocalStorageConfig
from dbguardian.storage.s3.config import S3StorageConfig
from dbguardian.units import parse_duration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "dbguardian.service"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_POLICY = ROOT / "deploy" / "compose" / "policy.yaml"

UNIT_NAME = "dbguardian.service"
UNIT_EXEC_START = "ExecStart=/opt/dbguardian/bin/dbguardian run"
CONTAINER_POLICY = "/etc/dbguardian/policy.yaml"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
SERVICES = {"postgres", "minio", "minio-bucket", "dbguardian", "prometheus"}

# "some.service: ..." or "/path/some.service:12: ...": a line systemd-analyze says about one unit.
_UNIT_LINE = re.compile(
    r"^(?P<unit>[^\s:]+\.(?:service|socket|target|mount|automount|swap|timer|path|slice|scope|device))(?::\d+)?:\s"
)


def _require(tool: str, debian_package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package {debian_package})")
    return path


def _run(argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env)


def _clean_env() -> dict[str, str]:
    """The environment without DBGUARDIAN_* overrides, so the files are checked as they are."""
    return {key: value for key, value in os.environ.items() if not key.upper().startswith("DBGUARDIAN_")}


# --------------------------------------------------------------------------------------------- systemd unit
def _unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """section → key → values (in order; keys such as SystemCallFilter may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line!r}"
        assert not line.endswith("\\"), f"continuation lines make the unit hard to read: {line!r}"
        key, separator, value = line.partition("=")
        assert separator, f"not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _systemd_quote(path: str) -> str:
    """A path as one quoted ExecStart word (backslash and quote escaped, '%' not a specifier)."""
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _executable_for_exec_start() -> str:
    """An existing executable to stand in for /opt/dbguardian/bin/dbguardian: this venv's dbguardian."""
    for candidate in (Path(sys.executable).with_name("dbguardian"), Path(shutil.which("dbguardian") or "")):
        if candidate.is_absolute() and candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return sys.executable


def _verify(unit_text: str, directory: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``systemd-analyze verify`` of a copy of the unit whose ExecStart exists on this machine.

    Returns the result and the stderr lines that concern our unit: every line except those that
    name another unit (the host's own units, loaded as dependencies, may be noisy).
    """
    analyze = _require("systemd-analyze", "systemd")
    assert unit_text.splitlines().count(UNIT_EXEC_START) == 1, f"the unit must have exactly one {UNIT_EXEC_START!r}"
    copy = directory / UNIT_NAME
    copy.write_text(unit_text.replace(UNIT_EXEC_START, f"ExecStart={_systemd_quote(_executable_for_exec_start())} run"))
    result = _run([analyze, "verify", "--man=no", "--generators=no", str(copy)])
    ours = []
    for line in result.stderr.splitlines():
        if not line.strip():
            continue
        match = _UNIT_LINE.match(line)
        if match is not None and Path(match.group("unit")).name != UNIT_NAME:
            continue
        ours.append(line)
    return result, ours


def test_systemd_unit_verifies_without_warnings(tmp_path: Path) -> None:
    result, ours = _verify(UNIT.read_text(), tmp_path)
    assert not ours, "systemd-analyze verify complains about the unit:\n" + "\n".join(ours)
    assert result.returncode == 0, f"systemd-analyze verify exited {result.returncode}:\n{result.stderr}"


def test_systemd_verify_check_sees_warnings(tmp_path: Path) -> None:
    """The check above is not vacuous: systemd-analyze only warns (exit 0) about a bad key, and we catch it."""
    broken = UNIT.read_text().replace("[Service]\n", "[Service]\nNoSuchSetting=yes\nProtectSystem=sometimes\n", 1)
    result, ours = _verify(broken, tmp_path)
    assert any("NoSuchSetting" in line for line in ours), result.stderr
    assert any("sometimes" in line for line in ours), result.stderr


def test_systemd_unit_settings() -> None:
    settings = _unit_settings(UNIT.read_text())
    service = settings["Service"]

    def one(key: str) -> str:
        values = service.get(key)
        assert values is not None and len(values) == 1, f"{key}= must be set once in [Service], got {values}"
        return values[0]

    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/opt/dbguardian/bin/dbguardian run",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "KillMode": "mixed",
        "User": "dbguardian",
        "Group": "dbguardian",
        "StateDirectory": "dbguardian",
        "Environment": f"DBGUARDIAN_POLICY={CONTAINER_POLICY}",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/dbguardian",
        "CapabilityBoundingSet": "",
        "SystemCallErrorNumber": "EPERM",
        "SystemCallArchitectures": "native",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "UMask": "0077",
        "ProtectProc": "invisible",
    }
    for key, value in expected.items():
        assert one(key) == value, f"{key}={one(key)!r}, expected {value!r}"
    for key in (
        "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectHome", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
        "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute",
    ):  # fmt: skip
        assert one(key) == "yes", f"{key}= must be yes"
    assert service["SystemCallFilter"][0] == "@system-service"
    assert all(value.startswith("~") for value in service["SystemCallFilter"][1:]), "later filters may only deny"

    # The watchdog is pinged every WatchdogSec/2; stopping must outlast the daemon's shutdown_grace.
    assert parse_duration(one("WatchdogSec")) >= timedelta(seconds=10)
    shutdown_grace = Policy.model_fields["shutdown_grace"].default
    assert isinstance(shutdown_grace, timedelta)
    assert parse_duration(one("TimeoutStopSec")) >= shutdown_grace + timedelta(seconds=15)
    assert settings["Install"]["WantedBy"] == ["multi-user.target"]


# --------------------------------------------------------------------------------------------- Dockerfile
def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped, as Docker reads them."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            keyword, _, arguments = line.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continuation line"
    return instructions


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _global_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    args: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            args[name] = default.strip('"')
    return args


def _stage_args(stage: list[tuple[str, str]]) -> dict[str, str]:
    return {
        name: default.strip('"')
        for name, _, default in (arguments.partition("=") for keyword, arguments in stage if keyword == "ARG")
    }


def test_dockerfile_image() -> None:
    instructions = _dockerfile_instructions(DOCKERFILE.read_text())
    stage = _final_stage(instructions)
    keywords = [keyword for keyword, _ in stage]

    base = stage[0][1].split()[0]
    for name, value in _global_args(instructions).items():
        base = base.replace(f"${{{name}}}", value)
    assert base == "python:3.11-slim-bookworm"

    healthchecks = [arguments for keyword, arguments in stage if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0] and "NONE" not in healthchecks[0]
    command = json.loads(healthchecks[0][healthchecks[0].index("CMD") + 3 :].strip())
    assert command[0] == "python", "no curl in a slim image: the health check uses Python's urllib"

    users = [arguments for keyword, arguments in stage if keyword == "USER"]
    assert users, "the image must not run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0"), f"USER {users[-1]} is root"
    assert keywords.index("USER") > max(index for index, keyword in enumerate(keywords) if keyword == "RUN"), (
        "USER comes after the last RUN (installs run as root, the daemon does not)"
    )

    def last(keyword: str) -> str:
        return [arguments for name, arguments in stage if name == keyword][-1]

    assert json.loads(last("ENTRYPOINT")) == ["dbguardian"]
    assert json.loads(last("CMD")) == ["run"]
    assert "9863" in last("EXPOSE").split()
    assert "/var/lib/dbguardian" in json.loads(last("VOLUME"))
    env = " ".join(arguments for keyword, arguments in stage if keyword == "ENV")
    assert f"DBGUARDIAN_POLICY={CONTAINER_POLICY}" in env.split()

    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "pip install --require-hashes -r requirements-runtime.lock" in runs
    assert "pip install --no-deps ." in runs
    # The client tools of every major the compose stack (and the README's users) run.
    majors = _stage_args(stage)["PG_MAJORS"].split()
    assert {"13", "14", "15", "16", "17"} <= set(majors), majors
    assert "postgresql-client-${major}" in runs


def _dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def _in_build_context(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context (last matching pattern wins; a match on a
    parent directory counts; ``**/`` also matches at the top)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    included = True
    for negated, pattern in _dockerignore_patterns():
        alternatives = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        if any(fnmatchcase(prefix, alternative) for prefix in prefixes for alternative in alternatives):
            included = negated
    return included


def test_dockerignore_keeps_what_the_build_copies() -> None:
    instructions = _dockerfile_instructions(DOCKERFILE.read_text())
    sources = []
    for keyword, arguments in instructions:
        words = arguments.split()
        if keyword in ("COPY", "ADD") and not any(word.startswith("--from") for word in words):
            sources += [word for word in words[:-1] if not word.startswith("--")]
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file"
        files = [path] if path.is_file() else [file for file in path.rglob("*") if file.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in file.parts and file.suffix != ".so":  # built here, rebuilt by the image
                assert _in_build_context(relative), f"{relative} is needed by the build but .dockerignore drops it"
    for secret_or_bulk in (".git/config", ".venv/bin/python", "deploy/compose/pg_password.txt",
                           "deploy/compose/minio_password.txt", "tests/conftest.py",
                           "dbguardian/pipeline/_dumpscan.cpython-311-x86_64-linux-gnu.so"):  # fmt: skip
        assert not _in_build_context(secret_or_bulk), f"{secret_or_bulk} should stay out of the build context"


# --------------------------------------------------------------------------------------------- docker-compose
def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _compose_command() -> list[str]:
    compose = shutil.which("docker-compose")
    if compose is not None:
        return [compose]
    docker = shutil.which("docker")
    if docker is not None and _run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    pytest.skip("neither docker-compose nor the docker compose plugin is installed (Debian package docker-compose)")


def _mount_source(service: dict[str, Any], target: str) -> Path:
    """The host file a service bind-mounts at ``target`` (short volume syntax)."""
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == target:
            assert source.startswith("./"), f"{volume}: expected a path relative to the compose file"
            return ROOT / source
    raise AssertionError(f"nothing is mounted at {target}")


def test_compose_config_is_valid() -> None:
    result = _run([*_compose_command(), "-f", str(COMPOSE), "config", "-q"])
    assert result.returncode == 0, f"compose config exited {result.returncode}:\n{result.stderr}"
    assert not result.stderr.strip(), f"compose config warns:\n{result.stderr}"


def test_compose_stack() -> None:
    compose = _compose()
    services: dict[str, Any] = compose["services"]
    assert set(services) == SERVICES

    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "POSTGRES_PASSWORD" not in postgres["environment"], "the password comes from the secret file"
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"
    assert "pg_password" in postgres["secrets"]

    assert "minio" in str(services["minio"]["image"]), "the S3-compatible store is MinIO"

    dbguardian = services["dbguardian"]
    build = dbguardian["build"]
    assert (build if isinstance(build, str) else build["context"]) == "."
    assert dbguardian["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_password" in dbguardian["secrets"]
    assert _mount_source(dbguardian, CONTAINER_POLICY) == COMPOSE_POLICY
    shutdown_grace = load_policy(COMPOSE_POLICY).shutdown_grace
    assert parse_duration(dbguardian["stop_grace_period"]) > shutdown_grace

    assert str(services["prometheus"]["image"]).startswith("prom/prometheus:")
    assert _mount_source(services["prometheus"], PROMETHEUS_CONFIG).is_file()

    secret_file = ROOT / compose["secrets"]["pg_password"]["file"]
    assert secret_file.is_file() and secret_file.read_text().strip(), "the dev-only password file"


def test_compose_policy_matches_the_stack() -> None:
    """The policy mounted into the dbguardian container fits the services around it."""
    services = _compose()["services"]
    policy = load_policy(COMPOSE_POLICY)
    assert str(policy.state_dir) == "/var/lib/dbguardian"
    assert f"dbguardian-data:{policy.state_dir}" in services["dbguardian"]["volumes"]
    assert policy.metrics.listen == "0.0.0.0:9863", "Prometheus scrapes it from another container"

    postgres_env = services["postgres"]["environment"]
    target = policy.targets["app"]
    dsn = urlsplit(target.dsn)
    assert (dsn.hostname, dsn.port, dsn.username) == ("postgres", 5432, postgres_env["POSTGRES_USER"])
    assert dsn.path.strip("/") == postgres_env["POSTGRES_DB"]
    assert str(target.password_file) == postgres_env["POSTGRES_PASSWORD_FILE"]
    assert target.storage == ["local", "offsite"]
    local = policy.storage["local"]
    assert isinstance(local, LocalStorageConfig) and Path(local.path).is_relative_to(policy.state_dir)
    # The off-site copy goes to the stack's MinIO, into the bucket minio-bucket creates, with the
    # credentials MinIO starts with (the same secret files, mounted into dbguardian).
    offsite = policy.storage["offsite"]
    assert isinstance(offsite, S3StorageConfig)
    assert (urlsplit(offsite.endpoint_url or "").hostname, offsite.addressing_style) == ("minio", "path")
    assert f"offsite/{offsite.bucket}" in " ".join(services["minio-bucket"]["command"])
    minio_env = services["minio"]["environment"]
    assert str(offsite.access_key_id_file) == minio_env["MINIO_ROOT_USER_FILE"]
    assert str(offsite.secret_access_key_file) == minio_env["MINIO_ROOT_PASSWORD_FILE"]
    assert {"minio_user", "minio_password"} <= set(services["dbguardian"]["secrets"])
    assert services["dbguardian"]["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    assert "later change" not in COMPOSE.read_text() + COMPOSE_POLICY.read_text()
    assert {"daily", "weekly"} <= set(target.schedules)
    assert target.schedules["daily"].cron == "0 2 * * *" and target.schedules["daily"].keep == 7

    prometheus = yaml.safe_load(_mount_source(services["prometheus"], PROMETHEUS_CONFIG).read_text())
    targets = [
        address
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for address in static["targets"]
    ]
    assert f"dbguardian:{policy.metrics.port}" in targets


def test_compose_policy_passes_check_policy() -> None:
    result = _run(
        [sys.executable, "-m", "dbguardian", "--policy", str(COMPOSE_POLICY.relative_to(ROOT)), "check-policy"],
        env=_clean_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("policy ok:"), result.stdout


def test_prometheus_config_passes_promtool() -> None:
    promtool = _require("promtool", "prometheus")
    config = _mount_source(_compose()["services"]["prometheus"], PROMETHEUS_CONFIG)
    result = _run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, f"promtool exited {result.returncode}:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout, result.stdout + result.stderr
