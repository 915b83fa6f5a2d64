"""Which servers reset-local and seed treat as this machine (pure)."""

from __future__ import annotations

import pytest

from dbguardian.errors import UsageError
from dbguardian.localdb import is_local, refuse_remote


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://me@localhost/app", "postgresql://me@LOCALHOST:5433/app", "postgresql://me@127.0.0.1/app",
        "postgresql://me@127.8.9.10/app", "postgresql://me@[::1]:5432/app", "postgresql:///app",
        "postgresql://me@/app?host=/var/run/postgresql", "postgresql:///app?host=localhost,127.0.0.1",
    ],
)  # fmt: skip
def test_local_servers(dsn: str) -> None:
    assert is_local(dsn)
    refuse_remote(dsn, allowed=False)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://me@db.internal/app", "postgresql://me@10.0.0.5/app", "postgresql://me@[2001:db8::1]/app",
        "postgresql://me@128.0.0.1/app", "postgresql:///app?host=localhost,db.internal", "postgresql://me@localhost.evil.com/app",
    ],
)  # fmt: skip
def test_other_servers_are_refused_unless_allowed(dsn: str) -> None:
    assert not is_local(dsn)
    with pytest.raises(UsageError, match="not this machine"):
        refuse_remote(dsn, allowed=False)
    refuse_remote(dsn, allowed=True)
