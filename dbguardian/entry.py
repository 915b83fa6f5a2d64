"""The ``dbguardian`` program's entry point: `wal-fetch` answered by the prefetch queue, else the CLI.

PostgreSQL runs restore_command once per 16 MB segment, one after the other while it replays, so the
start-up of each call is paid once per segment: with click and the command module loaded that was
~0.1 s, with pathlib, typing and re ~0.04 s, and with ``os``, ``socket`` and ``struct`` only (this module
and :mod:`dbguardian.walfile`) it is little more than Python's own start-up. This module parses the few
words a restore_command line has (the same options as :mod:`dbguardian.cli.wal_fetch`, whose click
command stays the reference and the fallback) and asks the queue's fetcher
(:func:`dbguardian.walfile.fetch_from_queue`). Anything it does not recognise (``--help``, a typo,
``--prefetch 0``) goes to click as usual; so does a queue that cannot answer, in which case the click
command fetches the file in-process.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

GLOBAL_OPTIONS = {"--policy", "--log-level", "--log-format"}
COMMAND_OPTIONS = {"--policy", "--target", "--identity", "--prefetch", "--queue-idle"}
QUEUE_SERVER_FLAG = "--queue-server"


def _options(words: list[str], known: set[str], stop: str | None) -> tuple[dict[str, str], list[str]] | None:
    """Options (``--name value`` or ``--name=value``) until ``stop`` (or the end) and the other words;
    None for anything unknown."""
    options: dict[str, str] = {}
    rest: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == stop:
            return options, words[index:]
        if word.startswith("-"):
            key, equals, value = word.partition("=")
            if key not in known:
                return None
            if not equals:
                index += 1
                if index >= len(words):
                    return None
                value = words[index]
            options[key] = value
        elif stop is not None:
            return None  # a word before the command: not a shape this parser knows
        else:
            rest.append(word)
        index += 1
    return (options, rest) if stop is None else None


DEFAULT_POLICY = "/etc/dbguardian/policy.yaml"  # dbguardian.cli.DEFAULT_POLICY_PATH (a unit test checks)


def parse(argv: list[str]) -> tuple[str, str, str, list[str]] | None:
    """(name, dest, queue key, argv of the queue's fetcher) from ``dbguardian`` arguments, or None when
    click should parse them. The key names what the fetcher must have been started with (policy,
    target, identity, prefetch): a fetcher started with other options does not answer."""
    head = _options(argv, GLOBAL_OPTIONS, "wal-fetch")
    if head is None:
        return None
    global_options, tail = head
    parsed = _options(tail[1:], COMMAND_OPTIONS, None)
    if parsed is None:
        return None
    options, positional = parsed
    prefetch = options.get("--prefetch", "8")
    if len(positional) != 2 or not prefetch.isdigit() or not 0 < int(prefetch) <= 64:
        return None  # --prefetch 0: fetch in this process, no queue
    name, dest = positional
    if "/" in name or not name:
        return None
    policy = (
        options.get("--policy") or global_options.get("--policy") or os.environ.get("DBGUARDIAN_POLICY") or DEFAULT_POLICY
    )
    identity = options.get("--identity") or os.environ.get("DBGUARDIAN_IDENTITY_FILE") or ""
    policy, identity, dest = os.path.abspath(policy), identity and os.path.abspath(identity), os.path.abspath(dest)
    target = options.get("--target", "")
    key = "\x1f".join([policy, target, identity, str(int(prefetch))])
    if any(character in key + name for character in "\t\n\r"):
        return None  # would break the one-line protocol
    fetcher = [sys.executable, "-m", "dbguardian", "--policy", policy, "wal-fetch", QUEUE_SERVER_FLAG, "--queue-key", key]
    fetcher += ["--prefetch", prefetch]
    if target:
        fetcher += ["--target", target]
    if identity:
        fetcher += ["--identity", identity]
    if "--queue-idle" in options:
        fetcher += ["--queue-idle", options["--queue-idle"]]
    return name, dest, key, [*fetcher, name, dest]


def answer_from_queue(argv: list[str]) -> int | None:
    """The exit status of ``wal-fetch`` answered through the prefetch queue, or None (click takes over)."""
    parsed = parse(argv)
    if parsed is None:
        return None
    from dbguardian.walfile import fetch_from_queue

    name, dest, key, fetcher = parsed
    answer = fetch_from_queue(name, dest, key, fetcher)
    if answer is None:
        return None
    code, message = answer
    if code != 0:
        print(f"error: {message}", file=sys.stderr)
    return code


def main() -> None:
    if "wal-fetch" in sys.argv:
        code = answer_from_queue(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    # pydantic looks for plugins in every installed distribution's entry points when the first model
    # is built: 15-30 ms of every command's start-up (issue 14), for plugins dbguardian never uses and
    # that would see the policy's secrets. Pydantic's documented switch turns the lookup off; a value
    # the user set wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from dbguardian.cli import main as cli_main

    if command_word(sys.argv[1:]) == "run":  # the daemon ends the usual way (its threads, its executor)
        cli_main()
        return
    try:
        cli_main()
        status: object = 0
    except SystemExit as done:
        status = done.code
    exit_now(status)


def command_word(argv: list[str]) -> str | None:
    """The command of a ``dbguardian`` argument list: the first word after the global options."""
    index = 0
    while index < len(argv):
        word = argv[index]
        if not word.startswith("-"):
            return word
        if word in GLOBAL_OPTIONS:
            index += 1  # its value
        index += 1
    return None


def exit_now(status: object) -> NoReturn:
    """End a command without the interpreter's teardown, after flushing what it wrote.

    Tearing down the interpreter frees every module and object one by one: 30-50 ms after a backup
    (pydantic's schemas, asyncpg, the storages), paid by each command and by each WAL segment a
    restore_command fetches (issue 14). Nothing dbguardian does depends on it: programs are waited
    for, files are closed and synced by the code that wrote them, and dbguardian registers no atexit
    hook. ``status`` is a ``SystemExit`` code: None is 0, a message is printed and is 1, as Python does.
    """
    import logging

    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:
        print(status, file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # A reader that went away (| head) or a closed stream: nothing left to flush to.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
