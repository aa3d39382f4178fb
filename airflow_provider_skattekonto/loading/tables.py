"""The three warehouse tables (files, balances, transactions): their ``CREATE TABLE`` statements per dialect,
and :func:`ensure_tables`, which creates them (with the change feed and the ready views) or checks existing
ones against this version's layout. No Airflow import.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_skattekonto.loading.dbapi import _transaction
from airflow_provider_skattekonto.loading.names import DEFAULT_PREFIX, _check_dialect, table_names

__all__ = ["ddl_statements", "ensure_tables"]


_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {
        "key": "TEXT",
        "name": "TEXT",
        "text": "TEXT",
        "sha": "TEXT",
        "date": "TEXT",  # ISO 8601 'YYYY-MM-DD'
        "ts": "TEXT",  # ISO 8601 in UTC, 'YYYY-MM-DDTHH:MM:SS.ffffff+00:00' (sorts as text)
        "int": "INTEGER",
        "big": "INTEGER",  # SQLite integers are 64-bit
        "suffix": " WITHOUT ROWID",
    },
    "postgresql": {
        "key": "TEXT",
        "name": "TEXT",
        "text": "TEXT",
        "sha": "CHAR(64)",
        "date": "DATE",
        "ts": "TIMESTAMPTZ",
        "int": "INTEGER",
        "big": "BIGINT",
        "suffix": "",
    },
    "generic": {
        "key": "VARCHAR(64)",
        "name": "VARCHAR(255)",
        "text": "VARCHAR(1000)",
        "sha": "CHAR(64)",
        "date": "DATE",
        "ts": "VARCHAR(32)",  # ISO 8601 in UTC (portable; sorts as text)
        "int": "INTEGER",
        "big": "BIGINT",
        "suffix": "",
    },
}

_FILE_COLUMNS = (
    "file_id",
    "file_name",
    "sha256",
    "orderer",
    "layout_version",
    "created_at",
    "delivery_morning",
    "loaded_at",
    "principal_count",
    "transaction_count",
    "amount_sum_ore",
    "balance_sum_ore",
    "principals_loaded",
    "principals_replaced",
    "principals_skipped_older",
    "transactions_inserted",
    "transactions_deleted",
)


def ddl_statements(*, dialect: str, prefix: str = DEFAULT_PREFIX, schema: str | None = None) -> list[str]:
    """The ``CREATE TABLE`` statements (without ``IF NOT EXISTS``) for ``dialect``, in creation order."""
    t = _TYPES[_check_dialect(dialect)]
    n = table_names(prefix, schema)
    files = f"""CREATE TABLE {n.files} (
    file_id {t["key"]} NOT NULL PRIMARY KEY,
    file_name {t["name"]} NOT NULL,
    sha256 {t["sha"]} NOT NULL UNIQUE,
    orderer {t["key"]} NOT NULL,
    layout_version {t["key"]} NOT NULL,
    created_at {t["ts"]} NOT NULL,
    delivery_morning {t["ts"]},
    loaded_at {t["ts"]} NOT NULL,
    principal_count {t["int"]} NOT NULL,
    transaction_count {t["big"]} NOT NULL,
    amount_sum_ore {t["big"]} NOT NULL,
    balance_sum_ore {t["big"]} NOT NULL,
    principals_loaded {t["int"]} NOT NULL,
    principals_replaced {t["int"]} NOT NULL,
    principals_skipped_older {t["int"]} NOT NULL,
    transactions_inserted {t["big"]} NOT NULL,
    transactions_deleted {t["big"]}
)"""
    balances = f"""CREATE TABLE {n.balances} (
    orderer {t["key"]} NOT NULL,
    principal {t["key"]} NOT NULL,
    reconciled_on {t["date"]} NOT NULL,
    file_id {t["key"]} NOT NULL REFERENCES {n.files} (file_id),
    balance_skatteverket_ore {t["big"]} NOT NULL,
    balance_kronofogden_ore {t["big"]},
    interest_skatteverket_ore {t["big"]},
    last_updated {t["ts"]} NOT NULL,
    next_reconciliation_on {t["date"]},
    PRIMARY KEY (orderer, principal, reconciled_on)
){t["suffix"]}"""
    transactions = f"""CREATE TABLE {n.transactions} (
    orderer {t["key"]} NOT NULL,
    principal {t["key"]} NOT NULL,
    reconciled_on {t["date"]} NOT NULL,
    file_id {t["key"]} NOT NULL,
    sequence_no {t["int"]} NOT NULL,
    transaction_id {t["key"]},
    transaction_date {t["date"]} NOT NULL,
    interest_date {t["date"]},
    transaction_text {t["text"]} NOT NULL,
    amount_skatteverket_ore {t["big"]},
    amount_kronofogden_ore {t["big"]},
    PRIMARY KEY (orderer, principal, reconciled_on, file_id, sequence_no)
){t["suffix"]}"""
    return [files, balances, transactions]


def ensure_tables(conn: Any, *, dialect: str, prefix: str = DEFAULT_PREFIX, schema: str | None = None) -> None:
    """Create the three tables, the change-feed tables and the ready views if they are missing, and commit.

    Creation is serialised across connections (PostgreSQL advisory lock; SQLite's write lock), so
    concurrent first loads into a fresh schema do not race. Existing tables are not migrated: they are
    checked against this version's layout (:data:`~airflow_provider_skattekonto.loading.schema.SCHEMA_VERSION`)
    and a difference raises :class:`SnapshotLoadError` saying what differs and how to migrate.
    ``sqlite`` and ``postgresql`` use ``CREATE TABLE IF NOT EXISTS``; ``generic`` probes each table with a
    ``SELECT`` and creates it when the probe fails.
    """
    from airflow_provider_skattekonto.loading import schema as layout

    dialect = _check_dialect(dialect)
    names = table_names(prefix, schema)
    statements = ddl_statements(dialect=dialect, prefix=prefix, schema=schema)
    tables = (names.files, names.balances, names.transactions)
    with layout.ddl_lock(conn, dialect, names.files, _transaction):
        if dialect != "generic":
            with _transaction(conn, dialect) as cur:
                _check_tables(cur, dialect, prefix, schema)
                for statement in statements:
                    cur.execute(statement.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1))
        else:
            # generic: one short transaction per table, so a failed probe never poisons the next statement
            for table, statement in zip(tables, statements, strict=True):
                try:
                    with _transaction(conn, dialect) as cur:
                        cur.execute(f"SELECT 1 FROM {table} WHERE 1 = 0")
                        cur.fetchall()
                except Exception:
                    with _transaction(conn, dialect) as cur:
                        cur.execute(statement)
        from airflow_provider_skattekonto.loading.views import ensure_feed_and_views

        ensure_feed_and_views(conn, dialect=dialect, prefix=prefix, schema=schema)  # change feed and ready views
        if dialect != "generic":
            with _transaction(conn, dialect) as cur:
                layout.record_version(cur, layout.version_table(names), _TYPES[dialect]["int"])


def _check_tables(cur: Any, dialect: str, prefix: str, schema: str | None) -> None:
    """Fail fast (:class:`SnapshotLoadError`) if existing tables have another layout or schema version."""
    from airflow_provider_skattekonto.loading import schema as layout
    from airflow_provider_skattekonto.loading.change_feed import feed_ddl_statements

    if dialect == "generic":
        return
    names = table_names(prefix, schema)
    version_table = layout.version_table(names)
    layout.check_version(layout.stored_version(cur, dialect, version_table), version_table)
    feed = [table for table, _ in feed_ddl_statements(dialect=dialect, prefix=prefix, schema=schema)]
    layout.check_layout(
        cur, dialect, layout.expected_layout(ddl_statements(dialect=dialect, prefix=prefix, schema=schema) + feed)
    )
