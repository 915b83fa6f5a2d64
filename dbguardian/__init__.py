"""dbguardian: keeps PostgreSQL databases recoverable."""

from __future__ import annotations

from functools import cache

__all__ = ["__version__"]  # provided by __getattr__


@cache
def _version() -> str:
    # Looked up on first use: importlib.metadata costs tens of milliseconds, too much for `wal-push`,
    # which PostgreSQL runs once per WAL segment.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dbguardian")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
