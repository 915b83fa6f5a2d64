"""From verdicts to delivered messages.

Alert states and undelivered messages (the outbox) live in ``state_dir/alerts.json``, written
before anything is sent: a restart neither resends nor loses a message. Each channel is tried on
its own with retries and backoff; a failing channel never blocks the others and its messages stay
in the outbox until it takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from dbguardian.alerts.email import EmailChannel
from dbguardian.alerts.model import Channel, Notification
from dbguardian.alerts.slack import SlackChannel
from dbguardian.alerts.state import AlertState, step
from dbguardian.alerts.webhook import WebhookChannel
from dbguardian.errors import DbguardianError
from dbguardian.files import open_private, private_dirs
from dbguardian.health import Verdict
from dbguardian.logs import get_logger, register_secret
from dbguardian.policy import HEALTH_DEFAULTS, Policy
from dbguardian.state import read_json, write_json

log = get_logger("dbguardian.alerts")

MAX_BACKOFF = timedelta(minutes=10)
Counter = Callable[[str, str], None]


def build_channels(policy: Policy) -> list[Channel]:
    alerts = policy.alerts
    channels: list[Channel] = []
    if alerts.slack is not None:
        url = alerts.slack.secret("webhook_url").require()
        register_secret(url)
        channels.append(SlackChannel(url))
    if alerts.email is not None:
        register_secret(alerts.email.secret("password").resolve())
        channels.append(EmailChannel(alerts.email))
    if alerts.webhook is not None:
        url = alerts.webhook.secret("url").require()
        register_secret(url)
        channels.append(WebhookChannel(url))
    return channels


def renotify_for(policy: Policy, target: str) -> timedelta:
    """How often a firing alert of ``target`` is sent again (``(daemon)`` alerts use the defaults)."""
    return policy.health_rules(target).renotify if target in policy.targets else HEALTH_DEFAULTS.renotify


def _parse(moment: str | None) -> datetime | None:
    return datetime.fromisoformat(moment) if moment else None


class Alerter:
    """One per process: the alert state file has one writer, whatever reloads happen."""

    def __init__(self, policy: Policy, *, count: Counter | None = None, retry_delay: float = 0.5) -> None:
        self.policy = policy
        self.channels = {channel.name: channel for channel in build_channels(policy)}
        self.path = policy.state_dir / "alerts.json"
        self._count = count or (lambda channel, result: None)
        self._retry_delay = retry_delay
        self._lock = asyncio.Lock()

    def configure(self, policy: Policy, channels: list[Channel]) -> None:
        """Take a reloaded policy's channels (built beforehand, so this cannot fail half-way).

        The state file stays where the running policy put it: a changed ``state_dir`` takes effect at
        the next start (moving alert state under a running daemon would lose or repeat alerts).
        """
        self.policy = policy.model_copy(update={"state_dir": self.policy.state_dir})
        self.channels = {channel.name: channel for channel in channels}

    # ------------------------------------------------------------------ persistence
    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """The alert state and outbox, for this task alone: an asyncio lock within the process, and an
        flock on ``state_dir/alerts.lock`` across processes (the daemon, and cron's one-shot
        ``backup``/``check --notify`` on the same host), taken off the event loop, released by the
        kernel if the holder dies. Held while messages are sent too, so two processes never send one
        message twice."""
        async with self._lock:
            private_dirs(self.path.parent)
            with open_private(self.path.parent / "alerts.lock", "a") as handle:
                await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
                yield  # closing the file releases the flock

    def _load(self) -> tuple[dict[str, AlertState], list[dict[str, Any]]]:
        data = read_json(self.path) or {}
        states = {
            key: AlertState(value.get("firing", False), _parse(value.get("since")), _parse(value.get("last_sent")))
            for key, value in data.get("alerts", {}).items()
        }
        return states, list(data.get("outbox", []))

    def _save(self, states: dict[str, AlertState], outbox: list[dict[str, Any]]) -> None:
        alerts = {
            key: {
                "firing": state.firing,
                "since": state.since.isoformat() if state.since else None,
                "last_sent": state.last_sent.isoformat() if state.last_sent else None,
            }
            for key, state in states.items()
            if state.firing
        }
        write_json(self.path, {"alerts": alerts, "outbox": outbox})

    def target_states(self, target: str) -> dict[str, dict[str, str | bool | None]]:
        """The target's firing alerts (check -> state), as :mod:`dbguardian.handover` hands them over."""
        prefix = f"{target}/"
        return {
            key.removeprefix(prefix): {
                "firing": True,
                "since": state.since.isoformat() if state.since else None,
                "last_sent": state.last_sent.isoformat() if state.last_sent else None,
            }
            for key, state in self.firing().items()
            if key.startswith(prefix)
        }

    async def adopt(self, target: str, states: dict[str, Any]) -> None:
        """Take over the target's alert states from the daemon that led it before: its firing alerts
        stay firing here (no second "firing" message; "resolved" is sent when they clear), and alerts
        this process had for the target but the other one resolved are dropped silently."""
        prefix = f"{target}/"
        async with self._exclusive():
            current, outbox = self._load()
            kept = {key: state for key, state in current.items() if not key.startswith(prefix)}
            for check, value in states.items():
                if isinstance(value, dict) and value.get("firing"):
                    kept[prefix + check] = AlertState(True, _parse(value.get("since")), _parse(value.get("last_sent")))
            self._save(kept, outbox)

    def firing(self) -> dict[str, AlertState]:
        return {key: state for key, state in self._load()[0].items() if state.firing}

    # ------------------------------------------------------------------ producing
    def _notification(self, kind: str, verdict: Verdict, since: datetime | None, now: datetime) -> Notification:
        return Notification(
            id=secrets.token_hex(8),
            kind=kind,
            target=verdict.target,
            check=verdict.check,
            observed=verdict.observed,
            expected=verdict.expected,
            since=since.isoformat() if since else None,
            at=now.isoformat(),
            runbook=verdict.runbook,
            host=socket.gethostname(),
        )

    async def process(
        self, verdicts: Iterable[Verdict], now: datetime, renotify: Callable[[str], timedelta]
    ) -> list[Notification]:
        """Advance every (target, check) state machine; queue and send what the transitions call for."""
        async with self._exclusive():
            states, outbox = self._load()
            produced = []
            for verdict in verdicts:
                key = f"{verdict.target}/{verdict.check}"
                previous = states.get(key, AlertState())
                state, action = step(previous, verdict.ok, now, renotify(verdict.target))
                states[key] = state
                if action is not None:
                    since = previous.since if action == "resolved" else state.since
                    produced.append(self._notification(action, verdict, since, now))
            self._enqueue(outbox, produced, now)
            self._save(states, outbox)
        for notification in produced:
            log.warning("alert", kind=notification.kind, target=notification.target, check=notification.check,
                        observed=notification.observed)  # fmt: skip
        await self.flush(now)
        return produced

    def _enqueue(self, outbox: list[dict[str, Any]], notifications: list[Notification], now: datetime) -> None:
        for notification in notifications:
            for channel in self.channels:
                outbox.append({"channel": channel, "attempts": 0, "next_attempt": now.isoformat(),
                               "notification": notification.to_json()})  # fmt: skip

    async def send_now(self, notifications: list[Notification], now: datetime) -> None:
        async with self._exclusive():
            states, outbox = self._load()
            self._enqueue(outbox, notifications, now)
            self._save(states, outbox)
        await self.flush(now)

    # ------------------------------------------------------------------ delivering
    async def flush(self, now: datetime | None = None) -> int:
        """Try every due message in the outbox; returns how many are still waiting."""
        moment = now or datetime.now(UTC)
        async with self._exclusive():
            states, outbox = self._load()
            due = [item for item in outbox if datetime.fromisoformat(item["next_attempt"]) <= moment]
            if not due:
                return len(outbox)
            by_channel: dict[str, list[dict[str, Any]]] = {}
            for item in due:
                by_channel.setdefault(item["channel"], []).append(item)
            results = await asyncio.gather(*(self._deliver(name, items, moment) for name, items in by_channel.items()))
            delivered = {id(item) for done in results for item in done}
            outbox = [item for item in outbox if id(item) not in delivered]
            self._save(states, outbox)
            return len(outbox)

    async def _deliver(self, channel_name: str, items: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
        channel = self.channels.get(channel_name)
        delivered: list[dict[str, Any]] = []
        for item in items:
            if channel is None:  # the channel was removed from the policy: drop its messages
                delivered.append(item)
                continue
            notification = Notification(**item["notification"])
            if await self._send_with_retries(channel, notification):
                delivered.append(item)
                continue
            # Keep it, and stop trying this channel for now (order is kept; other channels go on).
            item["attempts"] += 1
            backoff = min(timedelta(seconds=5 * 2 ** min(item["attempts"], 10)), MAX_BACKOFF)
            for waiting in items[items.index(item) :]:
                waiting["next_attempt"] = (now + backoff).isoformat()
            break
        return delivered

    async def _send_with_retries(self, channel: Channel, notification: Notification) -> bool:
        attempts = self.policy.alerts.retries + 1
        for attempt in range(attempts):
            try:
                await channel.send(notification)
            except DbguardianError as error:
                self._count(channel.name, "failure")
                log.error("alert delivery failed", channel=channel.name, attempt=attempt + 1, error=str(error))
            except Exception as error:  # a channel bug must not take the daemon down
                self._count(channel.name, "failure")
                log.exception("alert channel crashed", channel=channel.name, error=repr(error))
            else:
                self._count(channel.name, "success")
                log.info("alert delivered", channel=channel.name, kind=notification.kind, target=notification.target,
                         check=notification.check)  # fmt: skip
                return True
            if attempt + 1 < attempts:
                await asyncio.sleep(self._retry_delay * 2**attempt)
        return False

    async def test(self) -> dict[str, str]:
        """Send a test message through every channel now (not queued); report each result."""
        now = datetime.now(UTC)
        verdict = Verdict("(test)", "alert test", False, "a test message from `dbguardian alert test`", "nothing")
        notification = self._notification("test", verdict, None, now)
        results: dict[str, str] = {}

        async def one(channel: Channel) -> None:
            try:
                await channel.send(notification)
                results[channel.name] = "ok"
            except Exception as error:  # report every channel, whatever went wrong
                results[channel.name] = f"failed: {error}"

        await asyncio.gather(*(one(channel) for channel in self.channels.values()))
        return results
