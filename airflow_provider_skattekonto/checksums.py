"""The SHA-256 of a stored file: one rule for the archive (already downloaded?) and the loader. No Airflow."""

from __future__ import annotations

import hashlib
from typing import BinaryIO

CHUNK_SIZE = 1 << 20


def sha256_of(stream: BinaryIO) -> tuple[str, int]:
    """``(sha256 hex, size in bytes)`` of a binary stream, read from where it stands to its end.

    Works for local files, ObjectStoragePath/fsspec files, pipes and in-memory buffers alike
    (``hashlib.file_digest`` hashes a ``BytesIO``'s whole buffer whatever its position, and cannot
    count the bytes of a stream without ``tell``).
    """
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
