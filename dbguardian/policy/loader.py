"""Reading the policy file: YAML → :class:`Policy`, every problem as one ``field.path: reason`` line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dbguardian.errors import PolicyError
from dbguardian.policy.settings import Policy

DEFAULT_POLICY_PATH = Path("/etc/dbguardian/policy.yaml")


def _format_error(error: Any) -> str:
    loc = [str(part) for part in error["loc"]]
    # Drop discriminator tags pydantic inserts into the path (targets.app.encryption.age.recipients).
    cleaned: list[str] = []
    for part in loc:
        if cleaned and cleaned[-1] == "encryption" and part in ("age", "gpg"):
            continue
        cleaned.append(part)
    message = str(error["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] == "union_tag_invalid":
        context = error.get("ctx", {})
        key = context.get("discriminator", "type").strip("'")
        message = f"unknown {key} {context.get('tag')!r}; expected one of: {context.get('expected_tags')}"
    field = ".".join(cleaned) or "policy"
    return f"{field}: {message}"


def parse_policy(data: Any) -> Policy:
    """Validate already-parsed YAML data (plus environment overrides) into a :class:`Policy`."""
    if not isinstance(data, dict):
        raise PolicyError(["policy: the file must be a YAML mapping (version, state_dir, storage, targets)"])
    try:
        return Policy(**data)
    except ValidationError as error:
        raise PolicyError([_format_error(item) for item in error.errors()]) from None


def load_policy(path: Path) -> Policy:
    """Read and validate the policy file; raises :class:`PolicyError` with one line per problem."""
    try:
        text = path.read_text()
    except OSError as error:
        raise PolicyError([f"policy: cannot read {path}: {error.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise PolicyError([f"policy: YAML syntax error{where}: {problem}"]) from None
    policy = parse_policy(data)
    policy._source_path = path.absolute()
    return policy


def summarize(policy: Policy) -> str:
    schedules = sum(len(target.schedules) for target in policy.targets.values())
    return (
        f"policy ok: {len(policy.targets)} target(s) ({', '.join(policy.targets)}), "
        f"{len(policy.storage)} storage(s) ({', '.join(policy.storage)}), {schedules} schedule(s), "
        f"timezone {policy.timezone}"
    )
