"""Building blocks of the policy models: strict base model, unit types, shared validators."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict

from dbguardian.units import parse_duration, parse_size

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def validate_cron(expression: str) -> str:
    from dbguardian.cron import parse_cron

    try:
        parse_cron(expression)
    except ValueError as error:
        if str(error).startswith("expected 5 fields"):
            raise
        raise ValueError(f"invalid cron expression {expression!r}: {error}") from None
    return expression


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
