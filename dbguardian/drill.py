"""Pure parts of restore drills: judging user checks and choosing the backup to restore."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

_COMPARISON = re.compile(r"^\s*(=|==|!=|<>|>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
_LITERAL = {"true": True, "false": False}

T = TypeVar("T")


def judge(value: Any, expect: str) -> bool:
    """Does ``value`` (one value a check's SQL returned) satisfy ``expect`` ('>= 1', '= 0', 'true', 'null')?"""
    word = expect.strip().lower()
    if word == "null":
        return value is None
    if word == "empty":
        return value is None or value == ""
    if word in _LITERAL:
        return isinstance(value, bool) and value is _LITERAL[word]
    match = _COMPARISON.match(expect)
    if match is None:
        raise ValueError(f"cannot understand expectation {expect!r}")
    if value is None or isinstance(value, bool):
        return False
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return False
    wanted = Decimal(match.group(2))
    operator = match.group(1)
    return {
        "=": number == wanted,
        "==": number == wanted,
        "!=": number != wanted,
        "<>": number != wanted,
        ">=": number >= wanted,
        "<=": number <= wanted,
        ">": number > wanted,
        "<": number < wanted,
    }[operator]


def pick_backup(newest_first: Sequence[T], pick: str, recent: int, rng: random.Random) -> T:
    """``newest``, or ``random_recent``: any of the ``recent`` newest, to catch older rot too."""
    if not newest_first:
        raise ValueError("no backups to pick from")
    if pick == "random_recent":
        return rng.choice(list(newest_first[:recent]))
    return newest_first[0]


def scratch_name(target: str, token: str) -> str:
    """A database name that cannot collide with a real one: dbguardian_drill_<target>_<token>."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", target.lower())
    prefix = "dbguardian_drill_"
    return f"{prefix}{cleaned[: 63 - len(prefix) - len(token) - 1]}_{token}"
