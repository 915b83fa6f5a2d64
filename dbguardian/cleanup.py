"""Failures of best-effort clean-up, logged and counted instead of swallowed.

Clean-up after a failed run (removing a half-written backup, dropping a staging database, writing the
attempt record) must never hide the run's own error, so it cannot raise. But a clean-up that fails
silently leaks: a staging database nobody drops, objects nobody deletes. Every such failure goes
through :func:`cleanup_failed`: one error line in the log naming what was left behind, and a
process-wide count per kind that the daemon exports as ``dbguardian_cleanup_failures_total{what}``.

This module sits at the bottom of the layers (beside ``logs``), so storage, catalog, restore and jobs
can all report through it without importing the daemon's metrics.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Literal, get_args

from dbguardian.logs import get_logger, redact_text

log = get_logger("dbguardian.cleanup")

_counts: Counter[str] = Counter()
_lock = threading.Lock()

What = Literal[
    "backup_objects",  # objects of a failed or partial backup run
    "staging_database",  # a restore's staging database or a drill's scratch database
    "attempt_record",  # the last-attempt record in state_dir (retention reads it)
    "drill_history",  # a drill's line in state_dir/drills/history.jsonl
    "spool_file",  # a restore/drill spool file under state_dir/tmp
    "scratch_cluster",  # a throw-away PostgreSQL cluster of a drill
]
"""The kinds of clean-up that can fail; the metric's ``what`` label takes one of these (mypy checks callers:
this function runs in except/finally blocks and must never raise)."""
WHAT: tuple[str, ...] = get_args(What)


def cleanup_failed(what: What, error: BaseException | str, **context: Any) -> None:
    """Log that a clean-up of ``what`` failed (with what was left behind in ``context``) and count it."""
    with _lock:
        _counts[what] += 1
    log.error("clean-up failed; something was left behind", what=what, error=redact_text(str(error)), **context)


def cleanup_failures() -> dict[str, int]:
    """Failures so far in this process, by kind (every kind present, zeros included)."""
    with _lock:
        return {what: _counts[what] for what in WHAT}
