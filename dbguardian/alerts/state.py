"""The alert state machine, pure: OK → FIRING sends an alert, FIRING re-sends every ``renotify``,
FIRING → OK sends one resolved message."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

Action = Literal["firing", "reminder", "resolved"]


@dataclass(frozen=True)
class AlertState:
    firing: bool = False
    since: datetime | None = None
    last_sent: datetime | None = None


def step(state: AlertState, ok: bool, now: datetime, renotify: timedelta) -> tuple[AlertState, Action | None]:
    if not ok:
        if not state.firing:
            return AlertState(firing=True, since=now, last_sent=now), "firing"
        if state.last_sent is None or now - state.last_sent >= renotify:
            return replace(state, last_sent=now), "reminder"
        return state, None
    if state.firing:
        return AlertState(), "resolved"
    return state, None
