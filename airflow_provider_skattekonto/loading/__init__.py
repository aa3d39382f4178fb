"""Loading answer files into a SQL warehouse: snapshot-safe, idempotent, all or nothing. No Airflow."""

from __future__ import annotations

from airflow_provider_skattekonto.loading.snapshot import (
    DEFAULT_PREFIX,
    DIALECTS,
    LoadResult,
    SnapshotLoadError,
    TableNames,
    ddl_statements,
    ensure_tables,
    load_answer_file,
    table_names,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DIALECTS",
    "LoadResult",
    "SnapshotLoadError",
    "TableNames",
    "ddl_statements",
    "ensure_tables",
    "load_answer_file",
    "table_names",
]
