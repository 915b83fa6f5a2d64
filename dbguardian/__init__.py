"""dbguardian: keeps PostgreSQL databases recoverable."""

from __future__ import annotations

__all__ = ["__version__"]  # provided by __getattr__

_found_version: list[str] = []  # not functools.cache: wal-fetch's start-up does not import functools


def _version() -> str:
    # Looked up on first use: importlib.metadata costs tens of milliseconds, too much for `wal-push`,
    # which PostgreSQL runs once per WAL segment.
    if not _found_version:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _found_version.append(version("dbguardian"))
        except PackageNotFoundError:  # running from a source tree without installation
            _found_version.append("0.0.0+unknown")
    return _found_version[0]


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
