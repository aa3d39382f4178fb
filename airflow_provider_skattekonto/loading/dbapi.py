"""Plain DB-API 2 plumbing shared by the loaders: which driver a connection belongs to, statements in its
paramstyle, and one all-or-nothing transaction. No Airflow import; no driver import.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from airflow_provider_skattekonto.loading.names import SnapshotLoadError

log = logging.getLogger(__name__)


def _driver_module(conn: Any) -> str:
    return type(conn).__module__.split(".", 1)[0]


def _paramstyle(conn: Any, dialect: str) -> str:
    if dialect == "sqlite":
        return "qmark"
    driver = sys.modules.get(_driver_module(conn))
    style = getattr(driver, "paramstyle", None)
    if style is None:
        return "format" if dialect == "postgresql" else "qmark"
    return str(style)


class _Params:
    """Renders statements written with ``?`` placeholders in a driver's paramstyle."""

    def __init__(self, paramstyle: str) -> None:
        if paramstyle not in ("qmark", "format", "pyformat", "numeric", "named"):
            raise SnapshotLoadError(f"Unsupported DB-API paramstyle {paramstyle!r}.")
        self.style = paramstyle
        self.named = paramstyle in ("pyformat", "named")

    def sql(self, statement: str) -> str:
        if self.style == "qmark":
            return statement
        if self.style == "format":
            return statement.replace("?", "%s")
        parts = statement.split("?")
        out = [parts[0]]
        for index, part in enumerate(parts[1:], start=1):
            marker = {"numeric": f":{index}", "named": f":p{index}", "pyformat": f"%(p{index})s"}[self.style]
            out.append(marker + part)
        return "".join(out)

    def args(self, values: Sequence[Any]) -> Sequence[Any] | dict[str, Any]:
        if self.named:
            return {f"p{index}": value for index, value in enumerate(values, start=1)}
        return values

    def many(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        if self.named:
            return [self.args(row) for row in rows]
        return rows


def _idle(conn: Any) -> bool:
    """True when a PostgreSQL connection (psycopg 3 or psycopg2) has no transaction open."""
    status = getattr(getattr(conn, "info", None), "transaction_status", None)  # psycopg 3
    if status is None and hasattr(conn, "get_transaction_status"):  # psycopg2
        status = conn.get_transaction_status()
    return status is not None and int(status) == 0  # IDLE is 0 in both


@contextmanager
def _transaction(conn: Any, dialect: str) -> Iterator[Any]:
    """One database transaction on ``conn``: commit on success, roll back on any error.

    Joins a transaction the caller left open (and commits or rolls it back with ours). A driver in
    autocommit mode is switched out of it for the duration; SQLite gets an explicit ``BEGIN IMMEDIATE``
    (takes the write lock up front, so concurrent loaders serialize instead of deadlocking).
    """
    restore_autocommit = False
    sqlite_sql_control = False
    is_sqlite = _driver_module(conn) in ("sqlite3", "pysqlite3") or dialect == "sqlite"
    if is_sqlite and hasattr(conn, "in_transaction"):  # also under the generic dialect
        # Python 3.12+ ``autocommit=True``: commit()/rollback() are no-ops, use SQL for both ends.
        sqlite_sql_control = getattr(conn, "autocommit", None) is True
        if not conn.in_transaction and getattr(conn, "autocommit", None) is not False:
            conn.execute("BEGIN IMMEDIATE")
    elif getattr(conn, "autocommit", False) is True:
        conn.autocommit = False
        restore_autocommit = True
    cur = conn.cursor()
    try:
        yield cur
    except BaseException:
        with suppress(Exception):
            cur.close()
        try:
            if sqlite_sql_control:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.rollback()
        except Exception as rollback_error:  # connection gone: the server discards the transaction
            log.warning("Rollback failed (%s); the server discards the uncommitted transaction.", str(rollback_error))
        raise
    else:
        cur.close()
        if sqlite_sql_control:
            if conn.in_transaction:
                conn.execute("COMMIT")
        else:
            conn.commit()
    finally:
        if restore_autocommit:
            with suppress(Exception):
                conn.autocommit = True
