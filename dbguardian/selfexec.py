"""How a PostgreSQL server runs dbguardian: ``restore_command`` (``wal-fetch``) and, before PostgreSQL 15,
``archive_command`` (``wal-push``) are shell lines the server's OS user runs with the server's ``PATH``,
which rarely holds a virtualenv's ``bin``: they name the executable by its absolute path."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

EXECUTABLE_ENV = "DBGUARDIAN_RESTORE_EXECUTABLE"


def dbguardian_executable() -> list[str]:
    """How the server runs dbguardian: ``$DBGUARDIAN_RESTORE_EXECUTABLE`` (shell words; for installs
    where the server's OS user runs dbguardian differently), else the installed script next to this
    interpreter, else ``dbguardian`` on ``PATH``, else ``python -m dbguardian``."""
    override = os.environ.get(EXECUTABLE_ENV, "").strip()
    if override:
        return shlex.split(override)
    script = Path(sys.executable).parent / "dbguardian"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("dbguardian")
    return [found] if found else [sys.executable, "-m", "dbguardian"]
