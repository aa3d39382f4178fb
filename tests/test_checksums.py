"""One SHA-256 rule for the archive and the loader."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from airflow_provider_skattekonto.checksums import CHUNK_SIZE, sha256_of


def test_sha256_and_size_from_the_current_position(tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK_SIZE // 256 * 2 + 3)
    buffer = io.BytesIO(data)
    buffer.read(7)
    assert sha256_of(buffer) == (hashlib.sha256(data[7:]).hexdigest(), len(data) - 7)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    from airflow.sdk import ObjectStoragePath

    with ObjectStoragePath(path.as_uri()).open("rb") as stream:
        assert sha256_of(stream) == (hashlib.sha256(data).hexdigest(), len(data))
    assert sha256_of(io.BytesIO(b"")) == (hashlib.sha256(b"").hexdigest(), 0)
