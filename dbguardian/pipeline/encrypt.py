"""Public-key encryption stages: the ``age`` and ``gpg`` programs as streaming filters.

The daemon only ever holds public keys, so neither the host nor the bucket owner can read old
backups. GPG runs with a private, throw-away GNUPGHOME: the user's own keyring is never touched.
An encryption stage reports what the manifest records (method, recipients) in ``info`` once its
stream has started; callers build stages from plain values (the policy is not known here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dbguardian.errors import PipelineError, ToolError, UsageError
from dbguardian.pipeline.streams import through_program

IDENTITY_ENV = "DBGUARDIAN_IDENTITY_FILE"
GPG_PASSPHRASE_ENV = "DBGUARDIAN_GPG_PASSPHRASE_FILE"  # noqa: S105 (names a file, holds no secret)


@dataclass(frozen=True)
class EncryptionInfo:
    """What the manifest records: the method and who can decrypt, never key material."""

    method: str
    recipients: list[str]


def _program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolError(f"{name} is not installed (needed for {name} encryption); on Debian: apt-get install {name}")
    return path


@contextlib.contextmanager
def gnupg_home() -> Iterator[Path]:
    """A private GNUPGHOME (short path: gpg-agent's socket lives in it), removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="dbg-gpg-", dir="/tmp"))
    try:
        yield home
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=10, check=False
            )
        shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [_program("gpg"), "--homedir", str(home), "--batch", "--no-tty", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise ToolError(
            f"gpg {args[0]} failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no message'}"
        )
    return result


def _gpg_fingerprints(home: Path, recipients: list[str]) -> list[str]:
    fingerprints = []
    for recipient in recipients:
        output = _gpg(home, "--with-colons", "--list-keys", recipient).stdout
        found = [line.split(":")[9] for line in output.splitlines() if line.startswith("fpr:")]
        if not found:
            raise ToolError(f"gpg: no public key for recipient {recipient!r}")
        fingerprints.append(found[0])
    return fingerprints


class Encryption(Protocol):
    """An encrypting filter over a chunk stream; ``info`` is known once ``apply``'s stream has started."""

    @property
    def method(self) -> str: ...

    @property
    def info(self) -> EncryptionInfo | None: ...

    def apply(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]: ...


class AgeEncryption:
    method = "age"

    def __init__(self, recipients: Sequence[str]) -> None:
        self.recipients = list(recipients)
        self.info: EncryptionInfo | None = EncryptionInfo("age", list(recipients))

    async def apply(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        argv = [_program("age"), "--encrypt"]
        for recipient in self.recipients:
            argv += ["--recipient", recipient]
        async for out in through_program(argv, chunks, what="age encryption"):
            yield out


class GpgEncryption:
    """Recipients are resolved to fingerprints (what the manifest records) from ``keyring`` when given."""

    method = "gpg"

    def __init__(self, recipients: Sequence[str], keyring: Path | None = None) -> None:
        self.recipients = list(recipients)
        self.keyring = keyring
        self.info: EncryptionInfo | None = None

    async def apply(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        with gnupg_home() as home:
            if self.keyring is not None:
                await asyncio.to_thread(_gpg, home, "--import", str(self.keyring))
            fingerprints = await asyncio.to_thread(_gpg_fingerprints, home, self.recipients)
            self.info = EncryptionInfo("gpg", fingerprints)
            argv = [_program("gpg"), "--homedir", str(home), "--batch", "--no-tty", "--trust-model", "always",
                    "--compress-algo", "none", "--encrypt", "--output", "-"]  # fmt: skip
            for fingerprint in fingerprints:
                argv += ["--recipient", fingerprint]
            async for out in through_program(argv, chunks, what="gpg encryption"):
                yield out


def identity_file(explicit: Path | None) -> Path:
    path = explicit or (Path(os.environ[IDENTITY_ENV]) if os.environ.get(IDENTITY_ENV) else None)
    if path is None:
        raise UsageError(f"this backup is encrypted: pass --identity FILE (or set {IDENTITY_ENV})")
    if not path.is_file():
        raise UsageError(f"identity file {path} does not exist")
    return path


async def decrypt_stream(method: str, identity: Path, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        if method == "age":
            async for out in through_program([_program("age"), "--decrypt", "--identity", str(identity)], chunks):
                yield out
            return
        if method != "gpg":
            raise PipelineError(f"unknown encryption method {method!r} in the manifest")
        with gnupg_home() as home:
            await asyncio.to_thread(_gpg, home, "--import", str(identity))
            argv = [_program("gpg"), "--homedir", str(home), "--batch", "--no-tty", "--decrypt", "--output", "-"]
            passphrase = os.environ.get(GPG_PASSPHRASE_ENV)
            if passphrase:
                argv += ["--pinentry-mode", "loopback", "--passphrase-file", passphrase]
            async for out in through_program(argv, chunks):
                yield out
    except ToolError as error:
        raise PipelineError(f"cannot decrypt with identity {identity}: {error}") from None
