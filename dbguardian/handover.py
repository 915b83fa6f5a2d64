"""A target's safety state, handed from the daemon that leads it to whichever daemon leads it next.

With several daemons on one policy (:mod:`dbguardian.leadership`), the facts that decide safety must
not stay on one host: the last backup attempt (a failed one pauses retention), the alert states (a
firing alert must not fire again, and must resolve), and the health counters (consecutive database
failures, integrity re-read bookkeeping). The leader works on its own ``state_dir`` as a single
daemon does, and after each run publishes the target's slice of it to every storage of the target
(``_dbguardian/state/<target>.json``, only when it changed). A daemon that becomes the target's
leader adopts the newest published slice that is newer than what it has, before it runs anything.

Undelivered messages (the alert outbox) are not handed over: they stay with the daemon that queued
them and go out when it is back. A storage that cannot be written is logged and skipped; the
slice reaches the others.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dbguardian.alerts.dispatch import Alerter
from dbguardian.catalog import keys
from dbguardian.errors import DbguardianError, ObjectNotFound
from dbguardian.jobs.health import health_state_path
from dbguardian.logs import get_logger
from dbguardian.policy import Policy
from dbguardian.state import last_attempt, read_json, replace_attempt, write_json
from dbguardian.storage import target_storages

log = get_logger("dbguardian.handover")

FORMAT = 1


def _marker_path(policy: Policy, target: str) -> Path:
    return policy.state_dir / "handover" / f"{target}.json"


def _written_at(document: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(document.get("written_at")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


class Handover:
    def __init__(self, policy: Policy, alerter: Alerter) -> None:
        self.policy = policy
        self.alerter = alerter

    def configure(self, policy: Policy) -> None:
        self.policy = policy

    def snapshot(self, target: str) -> dict[str, Any]:
        """The target's slice of this daemon's state (without the envelope)."""
        return {
            "attempt": last_attempt(self.policy.state_dir, target),
            "health": read_json(health_state_path(self.policy, target)) or {},
            "alerts": self.alerter.target_states(target),
        }

    async def publish(self, target: str, now: datetime | None = None) -> None:
        """Write the target's slice to its storages if it changed since this daemon last wrote or adopted it."""
        if target not in self.policy.targets:
            return
        state = self.snapshot(target)
        marker = read_json(_marker_path(self.policy, target)) or {}
        if marker.get("state") == json.loads(json.dumps(state, default=str)):
            return
        moment = now or datetime.now(UTC)
        if previous := marker.get("written_at"):  # later than what it replaces, whatever the hosts' clocks say
            moment = max(moment, datetime.fromisoformat(previous) + timedelta(microseconds=1))
        document = {"format": FORMAT, "target": target, "written_at": moment.isoformat(),
                    "writer": socket.gethostname(), "state": state}  # fmt: skip
        payload = json.dumps(document, default=str, indent=1).encode()
        written = 0
        for storage in target_storages(self.policy, target):
            try:
                await storage.put_bytes(keys.state_key(target), payload)
                written += 1
            except DbguardianError as error:
                log.warning("target state not handed over to a storage", target=target, storage=storage.name,
                            error=str(error))  # fmt: skip
        if written:
            write_json(_marker_path(self.policy, target), json.loads(payload))

    async def adopt(self, target: str) -> bool:
        """Take the newest published slice if it is newer than this daemon's; True if one was adopted."""
        newest: dict[str, Any] | None = None
        for storage in target_storages(self.policy, target):
            try:
                document = json.loads(await storage.get_bytes(keys.state_key(target)))
            except ObjectNotFound:
                continue
            except (DbguardianError, ValueError) as error:
                log.warning("target state unreadable on a storage", target=target, storage=storage.name, error=str(error))
                continue
            if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("target") != target:
                continue
            if newest is None or _written_at(document) > _written_at(newest):
                newest = document
        marker = read_json(_marker_path(self.policy, target)) or {}
        if newest is None or _written_at(newest) <= _written_at(marker):
            return False
        state = newest.get("state") or {}
        attempt = state.get("attempt")
        replace_attempt(self.policy.state_dir, target, attempt if isinstance(attempt, dict) else None)
        health = state.get("health")
        write_json(health_state_path(self.policy, target), health if isinstance(health, dict) else {})
        alerts = state.get("alerts")
        await self.alerter.adopt(target, alerts if isinstance(alerts, dict) else {})
        write_json(_marker_path(self.policy, target), newest)
        log.info("took over the target's state", target=target, written_at=newest.get("written_at"),
                 writer=newest.get("writer"))  # fmt: skip
        return True
