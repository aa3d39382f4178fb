"""Loading answer files into a SQL warehouse: snapshot-safe, idempotent, all or nothing. No Airflow."""

from __future__ import annotations

from airflow_provider_skattekonto.loading.snapshot import (
    DEFAULT_PREFIX,
    DIALECTS,
    FileChecksumError,
    LoadResult,
    SnapshotLoadError,
    TableNames,
    VerifiedChunks,
    ddl_statements,
    ensure_tables,
    load_answer_file,
    load_answer_stream,
    sha256_of,
    table_names,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DIALECTS",
    "FileChecksumError",
    "LoadResult",
    "SnapshotLoadError",
    "TableNames",
    "VerifiedChunks",
    "ddl_statements",
    "ensure_tables",
    "load_answer_file",
    "load_answer_stream",
    "sha256_of",
    "table_names",
]
