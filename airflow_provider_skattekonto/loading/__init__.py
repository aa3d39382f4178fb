"""Loading answer files into a SQL warehouse: snapshot-safe, idempotent, all or nothing. No Airflow.

Names resolve lazily, so a DAG file that imports the load operator does not import the loader itself.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_PREFIX": "names",
    "DIALECTS": "names",
    "SnapshotLoadError": "names",
    "TableNames": "names",
    "table_names": "names",
    "FileChecksumError": "source",
    "LoadResult": "snapshot",
    "VerifiedChunks": "source",
    "ddl_statements": "tables",
    "ensure_tables": "tables",
    "load_answer_file": "snapshot",
    "load_answer_stream": "snapshot",
    "sha256_of": "snapshot",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
