"""Lineage: OpenLineage datasets for files and tables, and Airflow Assets for the warehouse tables.

OpenLineage is optional (``[openlineage]`` extra); its imports stay inside the functions that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_skattekonto.loading.names import DEFAULT_PREFIX, table_names

if TYPE_CHECKING:
    from airflow.sdk import Asset

TABLE_KINDS = ("files", "balances", "transactions")


def file_dataset(url: str) -> Any:
    """The OpenLineage dataset of a file: namespace ``file`` for local paths, ``scheme://authority`` else."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return Dataset(namespace="file", name=parts.path or url)
    name = parts.path if parts.scheme in ("http", "https") else parts.path.lstrip("/")
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=name)


def database_namespace(hook: Any, connection: Any, dialect: str) -> tuple[str, str]:
    """``(namespace, database)`` of a common-sql connection, from the hook's own OpenLineage answer.

    The hook's ``get_openlineage_database_info`` gives the namespace other producers use for the same
    database (``postgres://host:5432``...), so lineage joins up. Hooks without it (SQLite) fall back to
    ``scheme://host[:port]``.
    """
    info = None
    getter = getattr(hook, "get_openlineage_database_info", None)
    if getter is not None:
        try:
            info = getter(connection)
        except Exception:  # a hook's lineage helper must never fail the load's lineage entirely
            info = None
    if info is not None:
        from airflow.providers.openlineage.sqlparser import SQLParser

        return SQLParser.create_namespace(info), str(info.database or connection.schema or "")
    if dialect == "sqlite":
        return f"sqlite://{connection.host}", "main"
    port = f":{connection.port}" if connection.port else ""
    return f"{connection.conn_type}://{connection.host}{port}", connection.schema or ""


def table_datasets(namespace: str, database: str, schema: str | None, prefix: str) -> list[Any]:
    """The OpenLineage datasets of the three tables, named ``database.schema.table``."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    names = table_names(prefix, None)
    tables = [getattr(names, kind).strip('"') for kind in TABLE_KINDS]
    return [
        Dataset(namespace=namespace, name=".".join(part for part in (database, schema, table) if part))
        for table in tables
    ]


def warehouse_assets(
    database_uri: str, *, schema: str | None = "public", table_prefix: str = DEFAULT_PREFIX
) -> list[Asset]:
    """The Assets of the three tables, with URIs in Airflow's scheme for the database.

    ``database_uri`` names the database the way Airflow's asset URIs do, e.g.
    ``postgres://warehouse.example.com:5432/analytics``; each table is then
    ``<database_uri>/<schema>/<table>`` (``postgres://host:5432/analytics/public/skattekonto_balances``),
    or ``<database_uri>/<table>`` with ``schema=None``. Use them as the load task's ``outlets``: each
    asset event then carries the file and what was loaded (see :class:`SkattekontoToSqlOperator`).
    """
    from airflow.sdk import Asset

    names = table_names(table_prefix, None)
    base = database_uri.rstrip("/")
    prefix = f"{base}/{schema}" if schema else base
    return [Asset(uri=f"{prefix}/{getattr(names, kind).strip(chr(34))}") for kind in TABLE_KINDS]
