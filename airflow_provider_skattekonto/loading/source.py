"""Reading an answer file's bytes: streamed in chunks and verified against the sha256 (and size) it was
announced with. No Airflow import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO

from airflow_provider_skattekonto.exceptions import SkattekontoError

__all__ = ["FileChecksumError", "VerifiedChunks"]


class FileChecksumError(SkattekontoError):
    """The bytes read do not match the expected sha256 (or size): the file changed or is not the one
    announced. Nothing was loaded."""


class VerifiedChunks:
    """Iterate a binary stream in chunks while hashing it; :meth:`finish` reads any rest and raises
    :class:`FileChecksumError` when the sha256 (or size) differs from the expected one."""

    def __init__(
        self, stream: BinaryIO, *, name: str, sha256: str, size: int | None = None, chunk_size: int = 1 << 20
    ) -> None:
        self.stream = stream
        self.name = name
        self.expected = sha256.strip().lower()
        self.expected_size = size
        self.chunk_size = chunk_size
        self.digest = hashlib.sha256()
        self.size = 0
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        read = self.stream.read
        update = self.digest.update
        while True:
            chunk = read(self.chunk_size)
            if not chunk:
                break
            update(chunk)
            self.size += len(chunk)
            yield chunk
        self.finish()

    def finish(self) -> None:
        """Read what is left, then compare size and sha256 with the expected values."""
        if self.finished:
            return
        while chunk := self.stream.read(self.chunk_size):
            self.digest.update(chunk)
            self.size += len(chunk)
        self.finished = True
        actual = self.digest.hexdigest()
        if self.expected_size is not None and self.size != self.expected_size:
            raise FileChecksumError(
                f"{self.name}: read {self.size} bytes, expected {self.expected_size} (sha256 {actual}); the "
                "file is not the one announced (truncated or replaced?). Nothing was loaded; download it again."
            )
        if actual != self.expected:
            raise FileChecksumError(
                f"{self.name}: sha256 of the bytes read is {actual}, expected {self.expected}; the file is not "
                "the one announced (changed after download?). Nothing was loaded; download it again."
            )
