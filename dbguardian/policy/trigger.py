"""When something runs: ONE trigger model (a 5-field ``cron`` or an ``every`` interval).

Backup schedules, health checks, drills and verify jobs all say when they run the same way. A
schedule or a verify job must set exactly one of the two keys; health checks and drills have a
default, so they may set neither (``optional_trigger = True``) but never both.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BeforeValidator, model_validator

from dbguardian.policy.base import StrictModel
from dbguardian.units import parse_duration


def validate_cron(expression: str) -> str:
    from dbguardian.cron import parse_cron  # the evaluator; imported when a policy has a cron

    try:
        parse_cron(expression)
    except ValueError as error:
        if str(error).startswith("expected 5 fields"):
            raise
        raise ValueError(f"invalid cron expression {expression!r}: {error}") from None
    return expression


def _at_least_a_second(value: timedelta) -> timedelta:
    if value < timedelta(seconds=1):
        raise ValueError("must be at least 1s")
    return value


CronExpression = Annotated[str, BeforeValidator(str.strip), AfterValidator(validate_cron)]
Interval = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_at_least_a_second)]


class Trigger(StrictModel):
    """``cron`` (5 fields, in the policy's timezone) or ``every`` (an interval of at least 1s)."""

    optional_trigger: ClassVar[bool] = False
    """True where a default applies when neither key is set (then at most one may be set)."""

    cron: CronExpression | None = None
    every: Interval | None = None

    @model_validator(mode="after")
    def _one_trigger(self) -> Trigger:
        if self.cron is not None and self.every is not None:
            raise ValueError(f"set {'at most' if self.optional_trigger else 'exactly'} one of 'cron' or 'every'")
        if not self.optional_trigger and self.cron is None and self.every is None:
            raise ValueError("set exactly one of 'cron' or 'every'")
        return self
