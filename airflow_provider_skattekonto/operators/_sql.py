"""What the SQL operators (the load and the balance check) share: the loader dialect of a common-sql hook,
a connection that is closed however the work ends, and the early check of the table names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from airflow_provider_skattekonto.loading.names import table_names

__all__ = ["check_table_names_unless_templated", "dialect_of", "sql_connection"]


def dialect_of(hook: Any) -> str:
    """The loader dialect for a common-sql hook: ``sqlite``, ``postgresql`` or ``generic``."""
    candidates = [getattr(hook, "conn_type", None)]
    with suppress(Exception):  # dialect_name may need SQLAlchemy and a valid URI; conn_type suffices then
        candidates.append(hook.dialect_name)
    for candidate in candidates:
        name = str(candidate or "").lower()
        if name == "sqlite":
            return "sqlite"
        if name in ("postgres", "postgresql") or name.startswith("postgresql+"):
            return "postgresql"
    return "generic"


@contextmanager
def sql_connection(sql_conn_id: str, log: Any) -> Iterator[tuple[Any, str, Any]]:
    """``(hook, dialect, DB-API connection)`` of ``sql_conn_id``; the connection is closed on exit, and a
    failing close (a dead connection) is only logged, so it never hides the work's own error."""
    from airflow_provider_skattekonto.version_compat import BaseHook

    hook = BaseHook.get_hook(sql_conn_id)
    dialect = dialect_of(hook)
    conn = hook.get_conn()
    try:
        yield hook, dialect, conn
    finally:
        try:
            conn.close()
        except Exception:  # pragma: no cover - closing a dead connection
            log.debug("Closing the database connection failed", exc_info=True)


def check_table_names_unless_templated(prefix: str, schema: str | None) -> None:
    """Fail at DAG parse time on a bad table prefix or schema; templated ones are checked once rendered."""
    if "{{" not in prefix and (schema is None or "{{" not in schema):
        table_names(prefix, schema)
