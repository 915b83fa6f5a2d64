"""Small durable facts dbguardian keeps in ``state_dir`` (one JSON file per subject, replaced atomically).

Everything under ``state_dir`` is private to the service user, whatever the umask (see
:mod:`dbguardian.files`): write there only through :func:`write_json`, :func:`append_line`, or
``files.private_dirs`` / ``files.open_private``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from dbguardian.cleanup import cleanup_failed
from dbguardian.errors import OperationError
from dbguardian.files import open_private, private_dirs
from dbguardian.logs import get_logger

log = get_logger("dbguardian.state")


def write_json(path: Path, data: Any) -> None:
    private_dirs(path.parent)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open_private(temp) as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)


def append_line(path: Path, line: str) -> None:
    """Append one line to a private log-like file (drill history), creating it and its directory."""
    private_dirs(path.parent)
    with open_private(path, "a") as handle:
        handle.write(line.rstrip("\n") + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        log.error("unreadable state file ignored", path=str(path), error=str(error))
        return None


def _attempt_path(state_dir: Path, target: str) -> Path:
    return state_dir / "targets" / f"{target}.json"


def record_attempt(state_dir: Path, target: str, tier: str, at: datetime, result: str, error: str | None = None) -> None:
    """Remember the outcome of the target's latest backup attempt (retention pauses after a failure)."""
    path = _attempt_path(state_dir, target)
    try:
        write_json(path, {"last_attempt": {"tier": tier, "at": at.isoformat(), "result": result, "error": error}})
    except OSError as failure:  # a read-only state dir must not turn a good backup into a failure; but say so
        cleanup_failed("attempt_record", failure, path=str(path), target=target)


def last_attempt(state_dir: Path, target: str) -> dict[str, Any] | None:
    data = read_json(_attempt_path(state_dir, target))
    attempt = data.get("last_attempt") if isinstance(data, dict) else None
    return attempt if isinstance(attempt, dict) else None


def replace_attempt(state_dir: Path, target: str, attempt: dict[str, Any] | None) -> None:
    """Take over another daemon's record of the target's latest attempt (:mod:`dbguardian.handover`)."""
    path = _attempt_path(state_dir, target)
    if attempt is None:
        path.unlink(missing_ok=True)
    else:
        write_json(path, {"last_attempt": attempt})


def last_attempt_failed(state_dir: Path, target: str) -> bool:
    attempt = last_attempt(state_dir, target)
    return attempt is not None and attempt.get("result") != "success"


def check_state_dir(path: Path) -> None:
    """The state directory must exist (created if missing, owner-only) and be writable."""
    try:
        private_dirs(path)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise OperationError(f"state_dir {path} is not writable: {error.strerror or error}") from None
