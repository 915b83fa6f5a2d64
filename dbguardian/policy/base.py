"""Building blocks of the policy models: the strict base model, unit types and shared validators.

Field validators here return the value or raise ``ValueError`` with a message written for an
operator; the loader prefixes it with the field's path (``targets.app.dsn: must be ...``).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

from dbguardian.units import parse_duration, parse_size

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def absolute_path(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError("must be an absolute path")
    return value


AbsolutePath = Annotated[Path, AfterValidator(absolute_path)]


def validate_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a URL starting with postgresql:// (e.g. postgresql://backup@127.0.0.1:5432/app)")
    if not parts.path.strip("/"):
        raise ValueError("names no database; add it after the host: postgresql://user@host:5432/DBNAME")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return dsn


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s) URL with a host, or None. Never echoes the URL (it may hold a token)."""
    try:
        parts = urlsplit(url.strip())
        _ = parts.port
    except ValueError:
        return "must be an http(s) URL (https://host/path); this one has an invalid port"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL (https://host/path)"
    return None
