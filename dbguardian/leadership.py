"""Which daemon runs a target's jobs when several run one policy: a PostgreSQL advisory lock per target.

Why an advisory lock on the target's own server, not a lease object on the storage: the lock is held
by a session, so the server releases it the moment the holder dies (kill -9, host gone: its TCP
session ends) without clocks, lease renewals or conditional updates, which the storage interface
does not have (only create-if-absent); and every backup, drill and prune needs that server anyway.
``pg_try_advisory_lock`` needs no privilege, and the role already connects there.

A daemon is a target's *leader* while its session holds the lock: it runs all of the target's jobs
(scheduled, catch-up and continuous), so no two daemons ever run one job, and all of a target's
safety state has one writer at a time (see :mod:`dbguardian.handover`). The others are *followers*:
they skip the target's runs, and try to take the lock at each run and every ``check_every``.

When the server cannot be reached, nobody can prove who leads. :func:`acts` decides then: a daemon
that led keeps acting (its backups fail anyway, and its health checks keep alerting, which is what
matters while the database is down); a daemon that was a follower stays one (the leader is probably
alive); a daemon that never reached the server acts, since a duplicated health check is better than
none. The cost, said plainly: if the leader dies *while* the server is unreachable, nobody runs the
target's jobs until the server is back; the other daemons take over then.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import Literal, Protocol

import asyncpg

from dbguardian.errors import DbguardianError
from dbguardian.logs import get_logger
from dbguardian.policy import Policy
from dbguardian.postgres import connect, connection_info

log = get_logger("dbguardian.leadership")

Role = Literal["leader", "follower", "unknown"]
CONNECT_TIMEOUT = 5.0
QUERY_TIMEOUT = 5.0


def acts(role: Role, known: Role | None) -> bool:
    """Whether a daemon runs the target's jobs, given what it just learned (``role``) and the last role
    it knew for sure (``known``: None when it never reached the server)."""
    if role != "unknown":
        return role == "leader"
    return known != "follower"


def lock_key(group: str, target: str) -> tuple[int, int]:
    """The advisory lock's two int4 keys, from the group and target names (non-negative, so that
    ``pg_locks`` shows them as they are: its classid/objid columns are unsigned)."""
    digest = hashlib.sha256(f"dbguardian\0{group}\0{target}".encode()).digest()
    return (int.from_bytes(digest[:4], "big") & 0x7FFFFFFF, int.from_bytes(digest[4:8], "big") & 0x7FFFFFFF)


class Leadership(Protocol):
    async def claim(self, target: str) -> bool:
        """Whether this daemon runs ``target``'s jobs now (taking the lead if nobody has it)."""
        ...

    def role(self, target: str) -> Role | None: ...

    def configure(self, policy: Policy) -> None: ...

    async def release(self, target: str) -> None: ...

    async def prune(self) -> None: ...

    async def close(self) -> None: ...


class AlwaysLeader:
    """One daemon, a one-shot command, or ``coordination: {mode: none}``: every target is ours."""

    async def claim(self, target: str) -> bool:
        return True

    def role(self, target: str) -> Role | None:
        return "leader"

    def configure(self, policy: Policy) -> None:
        return None

    async def prune(self) -> None:
        return None

    async def release(self, target: str) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class _Session:
    """One database session per distinct target connection (targets on one DSN share it: a hundred
    targets in one database cost one connection per daemon, not a hundred)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """asyncpg runs one query at a time per connection; runs and the watch loop both ask."""
    connection: asyncpg.Connection | None = None


@dataclass
class _Seat:
    session: str
    key: tuple[int, int]
    role: Role | None = None
    known: Role | None = None
    """The last role learned from the server (never "unknown")."""


class AdvisoryLeadership:
    """Keeps a session per target connection open; it holds a target's lock while leading it."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._sessions: dict[str, _Session] = {}
        self._seats: dict[str, _Seat] = {}

    def configure(self, policy: Policy) -> None:
        """A reload: targets that are gone (or moved) are released by the next :meth:`prune`."""
        self.policy = policy

    def role(self, target: str) -> Role | None:
        seat = self._seats.get(target)
        return seat.role if seat is not None else None

    def _seat(self, target: str) -> _Seat | None:
        config = self.policy.targets.get(target)
        if config is None:
            return None
        info = connection_info(config)
        session = f"{info.dsn}\0{config.password_file or ''}"
        key = lock_key(self.policy.coordination.group, target)
        seat = self._seats.get(target)
        if seat is None or seat.session != session or seat.key != key:
            seat = self._seats[target] = _Seat(session, key, seat.role if seat else None, seat.known if seat else None)
        return seat

    async def claim(self, target: str) -> bool:
        seat = self._seat(target)
        if seat is None:
            return False
        session = self._sessions.setdefault(seat.session, _Session())
        async with session.lock:
            role = await self._probe(target, seat, session)
        if role != seat.role:
            log.info("leadership changed", target=target, role=role, previous=seat.role)
        seat.role = role
        if role != "unknown":
            seat.known = role
        return acts(role, seat.known)

    async def _probe(self, target: str, seat: _Seat, session: _Session) -> Role:
        try:
            if session.connection is None or session.connection.is_closed():
                session.connection = await connect(connection_info(self.policy.targets[target]), timeout=CONNECT_TIMEOUT)
            if await self._holds(session.connection, seat.key):
                return "leader"
            # Not held by this session, so a successful try holds it exactly once (holds stack per session).
            taken = await asyncio.wait_for(
                session.connection.fetchval("SELECT pg_try_advisory_lock($1, $2)", *seat.key), QUERY_TIMEOUT
            )
            return "leader" if taken else "follower"
        except (DbguardianError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("leadership unknown: the target's server cannot be reached", target=target, error=str(error))
            await _close(session)  # every target on this session lost its lock with it
            return "unknown"

    @staticmethod
    async def _holds(connection: asyncpg.Connection, key: tuple[int, int]) -> bool:
        """Whether this session holds the lock (asked each time: a leader whose session broke must not
        go on believing it leads)."""
        held = await asyncio.wait_for(
            connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                " AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 2 AND granted)",
                *key,
            ),
            QUERY_TIMEOUT,
        )
        return bool(held)

    async def release(self, target: str) -> None:
        """Give up ``target`` (a reload removed it, or the daemon stops)."""
        seat = self._seats.pop(target, None)
        session = self._sessions.get(seat.session) if seat is not None else None
        if seat is None or session is None:
            return
        async with session.lock:
            if session.connection is not None and seat.role == "leader":
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(session.connection.fetchval("SELECT pg_advisory_unlock($1, $2)", *seat.key),
                                           QUERY_TIMEOUT)  # fmt: skip
            if not any(other.session == seat.session for other in self._seats.values()):
                del self._sessions[seat.session]
                await _close(session)

    async def prune(self) -> None:
        """Release targets a reload removed, or whose connection or lock key changed."""
        for target, seat in list(self._seats.items()):
            current = self._seat(target) if target in self.policy.targets else None
            if current is None or current.session != seat.session or current.key != seat.key:
                self._seats[target] = seat
                await self.release(target)
        for name in [name for name in self._sessions if not any(s.session == name for s in self._seats.values())]:
            await _close(self._sessions.pop(name))

    async def close(self) -> None:
        """At stop: closing the sessions frees every lock at once."""
        self._seats.clear()
        for session in self._sessions.values():
            await _close(session)
        self._sessions.clear()


async def _close(session: _Session) -> None:
    connection, session.connection = session.connection, None
    if connection is None:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), timeout=QUERY_TIMEOUT)
    if not connection.is_closed():
        connection.terminate()


def leadership_for(policy: Policy) -> Leadership:
    if policy.coordination.mode == "none":
        return AlwaysLeader()
    return AdvisoryLeadership(policy)
