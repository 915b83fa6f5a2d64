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

    async def claim_many(self, targets: list[str]) -> dict[str, bool]:
        """:meth:`claim` for many targets, in two queries per session (the periodic check)."""
        ...

    def configure(self, policy: Policy) -> None: ...

    async def release(self, target: str) -> None: ...

    async def prune(self) -> None: ...

    async def close(self) -> None: ...


class AlwaysLeader:
    """One daemon, a one-shot command, or ``coordination: {mode: none}``: every target is ours."""

    async def claim(self, target: str) -> bool:
        return True

    async def claim_many(self, targets: list[str]) -> dict[str, bool]:
        return dict.fromkeys(targets, True)

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
        return (await self.claim_many([target])).get(target, False)

    async def claim_many(self, targets: list[str]) -> dict[str, bool]:
        seats = {target: seat for target in targets if (seat := self._seat(target)) is not None}
        by_session: dict[str, dict[str, _Seat]] = {}
        for target, seat in seats.items():
            by_session.setdefault(seat.session, {})[target] = seat
        answers = dict.fromkeys(targets, False)
        for name, group in by_session.items():
            session = self._sessions.setdefault(name, _Session())
            async with session.lock:
                roles = await self._probe(next(iter(group)), group, session)
            for target, role in roles.items():
                seat = group[target]
                if role != seat.role:
                    log.info("leadership changed", target=target, role=role, previous=seat.role)
                seat.role = role
                if role != "unknown":
                    seat.known = role
                answers[target] = acts(role, seat.known)
        return answers

    async def _probe(self, first: str, group: dict[str, _Seat], session: _Session) -> dict[str, Role]:
        """The roles of the targets sharing ``session``: which locks it holds, then one try for the rest."""
        try:
            if session.connection is None or session.connection.is_closed():
                session.connection = await connect(connection_info(self.policy.targets[first]), timeout=CONNECT_TIMEOUT)
            connection = session.connection
            # Asked each time: a leader whose session broke must not go on believing it leads.
            held = {
                (int(row[0]), int(row[1]))
                for row in await asyncio.wait_for(
                    connection.fetch(
                        "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory'"
                        " AND pid = pg_backend_pid() AND objsubid = 2 AND granted"
                    ),
                    QUERY_TIMEOUT,
                )
            }
            roles: dict[str, Role] = {target: "leader" for target, seat in group.items() if seat.key in held}
            wanted = [(target, seat.key) for target, seat in group.items() if target not in roles]
            if wanted:
                # Not held by this session, so a successful try holds each exactly once (holds stack per session).
                rows = await asyncio.wait_for(
                    connection.fetch(
                        "SELECT pg_try_advisory_lock(k1, k2) FROM unnest($1::int[], $2::int[]) WITH ORDINALITY"
                        " AS keys(k1, k2, n) ORDER BY n",
                        [key[0] for _, key in wanted],
                        [key[1] for _, key in wanted],
                    ),
                    QUERY_TIMEOUT,
                )
                for (target, _), row in zip(wanted, rows, strict=True):
                    roles[target] = "leader" if row[0] else "follower"
            return roles
        except (DbguardianError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            for target, seat in group.items():
                if seat.role != "unknown":  # once per outage, not every check
                    log.warning("leadership unknown: the target's server cannot be reached", target=target,
                                error=str(error))  # fmt: skip
            await _close(session)  # every target on this session lost its lock with it
            return dict.fromkeys(group, "unknown")

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
