"""The read end of a backup: stored bytes checked against what the manifest expects, decrypted,
decompressed, and optionally spooled to a file.

Plain-typed on purpose: callers pass what they expect of an object (key, size, sha256) and the
manifest's compression algorithm and encryption method as strings, so the pipeline needs no catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dbguardian.cleanup import cleanup_failed
from dbguardian.errors import ChecksumMismatch, PipelineError
from dbguardian.files import private_dirs
from dbguardian.pipeline.encrypt import decrypt_stream, identity_file
from dbguardian.pipeline.process import Child
from dbguardian.pipeline.stages import Digest, decompressor
from dbguardian.pipeline.streams import through_stage
from dbguardian.progress import Progress


class Readable(Protocol):
    """What the read path needs of a storage."""

    @property
    def name(self) -> str: ...

    def read(self, key: str) -> AsyncIterator[bytes]: ...


class ExpectedObject(Protocol):
    """What the reader must find: a manifest's stored object satisfies this as it is."""

    @property
    def key(self) -> str: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def sha256(self) -> str: ...


@dataclass(frozen=True)
class ObjectRef:
    key: str
    size_bytes: int
    sha256: str


async def stored_bytes(
    storage: Readable, expected: ExpectedObject, progress: Progress | None = None
) -> AsyncIterator[bytes]:
    """A stored object's bytes as stored; raises at the end if its size or sha256 differ from ``expected``."""
    digest = Digest()
    async for chunk in storage.read(expected.key):
        digest.update(chunk)
        if progress:
            progress.advance(len(chunk))
        if digest.size > expected.size_bytes:
            raise ChecksumMismatch(
                f"{storage.name}:{expected.key} is larger than the manifest's {expected.size_bytes} bytes; "
                "the stored object was changed"
            )
        yield chunk
    if digest.size != expected.size_bytes or digest.hexdigest() != expected.sha256:
        raise ChecksumMismatch(
            f"{storage.name}:{expected.key}: {digest.size} bytes with sha256 {digest.hexdigest()[:16]}…, "
            f"the manifest says {expected.size_bytes} bytes with sha256 {expected.sha256[:16]}…; "
            "the stored object is corrupt or was changed"
        )


async def read_verified(
    storage: Readable,
    expected: ExpectedObject,
    *,
    compression: str,
    encryption: str | None = None,
    identity: Path | None = None,
    progress: Progress | None = None,
) -> AsyncIterator[bytes]:
    """The original bytes of a stored object: checksum verified, decrypted (``encryption`` names the
    method, None if the object is not encrypted), decompressed with ``compression``'s algorithm."""
    stream = stored_bytes(storage, expected, progress)
    if encryption is not None:
        stream = decrypt_stream(encryption, identity_file(identity), stream)
    try:
        async for out in through_stage(stream, decompressor(compression)):
            yield out
    except PipelineError as error:
        # Corrupt data usually breaks decryption or decompression before the checksum (known only at
        # the end) can: name the object either way, so the report says which one to look at.
        raise PipelineError(f"{storage.name}:{expected.key}: {error}") from None


async def feed_program(child: Child, chunks: AsyncIterator[bytes]) -> None:
    """Write all chunks to the child's stdin; keep reading (to verify the checksum) if it stops early."""
    accepting = True
    async for chunk in chunks:
        if accepting and not await child.write(chunk):
            accepting = False
    await child.close_stdin()


@contextlib.asynccontextmanager
async def spooled_archive(
    storage: Readable,
    expected: ExpectedObject,
    *,
    compression: str,
    encryption: str | None,
    identity: Path | None,
    spool_dir: Path,
    prefix: str = "restore-",
    progress: Progress | None = None,
) -> AsyncIterator[Path]:
    """The object's original bytes, verified, in a temporary file in ``spool_dir``; removed on exit,
    whatever happens."""
    private_dirs(spool_dir)  # 0700 whatever the umask (mkstemp's file is 0600)
    fd, spool_name = tempfile.mkstemp(prefix=prefix, suffix=".pgc", dir=spool_dir)
    spool = Path(spool_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            chunks = read_verified(
                storage, expected, compression=compression, encryption=encryption, identity=identity, progress=progress
            )
            async for chunk in chunks:
                await asyncio.to_thread(handle.write, chunk)
        yield spool
    finally:
        try:
            spool.unlink(missing_ok=True)
        except OSError as error:  # must not hide the error the block may be raising
            cleanup_failed("spool_file", error, path=str(spool))
