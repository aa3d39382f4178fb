"""Fixtures for the loading tests: real SQLite files and the real PostgreSQL, one fresh warehouse per test.

``warehouse`` is parametrized over every load path:

* ``sqlite``: sqlite3, dialect ``sqlite`` (executemany);
* ``pg-psycopg2``: psycopg2, dialect ``postgresql`` (COPY via ``copy_expert``), own schema;
* ``pg-psycopg3``: psycopg 3, dialect ``postgresql`` (COPY via ``cursor.copy``), unique table prefix;
* ``generic-sqlite`` / ``generic-pg``: dialect ``generic`` (qmark / pyformat executemany).

PostgreSQL tests skip only when the server is unreachable and ``CI`` is unset.
The ``airflow_db`` fixture (migrated metadata DB for ``dag.test()``) comes from the ``tests.plugins.airflow_env``
plugin (``addopts = -p tests.plugins.airflow_env``), loaded before any test module imports Airflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.domain.records import Record
from airflow_provider_skattekonto.loading import LoadResult, ensure_tables, load_answer_file, table_names
from airflow_provider_skattekonto.loading.views import VIEW_SUFFIXES

PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=5"
_pg_state: dict[str, str | None] = {}


def postgres_unreachable() -> str | None:
    """None when PostgreSQL answers, else the reason (cached per process)."""
    if "reason" not in _pg_state:
        try:
            import psycopg

            with psycopg.connect(PG_DSN) as conn:
                conn.execute("SELECT 1")
            _pg_state["reason"] = None
        except Exception as exc:
            _pg_state["reason"] = f"PostgreSQL at 127.0.0.1:5432 (db test) unreachable: {exc}"
    return _pg_state["reason"]


def require_postgres() -> None:
    reason = postgres_unreachable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set: PostgreSQL tests must run)")
        pytest.skip(reason)


SQLITE_KINDS = ("sqlite", "generic-sqlite")


@dataclass
class Warehouse:
    """One empty warehouse (tables created) on a real database, with helpers to load and inspect it."""

    kind: str
    dialect: str
    connect: Callable[[], Any]
    prefix: str
    schema: str | None
    conn: Any = None
    extra_cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def names(self) -> Any:
        return table_names(self.prefix, self.schema)

    @property
    def on_sqlite(self) -> bool:
        """A SQLite database, whichever dialect the loader is told (``sqlite`` or ``generic``)."""
        return self.kind in SQLITE_KINDS

    def open(self) -> Any:
        if self.conn is None:
            self.conn = self.connect()
        return self.conn

    def ensure(self) -> None:
        ensure_tables(self.open(), dialect=self.dialect, prefix=self.prefix, schema=self.schema)

    def load(self, recs: Iterable[Record], *, sha256: str, name: str = "SKAHMST_test.txt", **kw: Any) -> LoadResult:
        conn = kw.pop("conn", None) or self.open()
        return load_answer_file(
            conn,
            recs,
            dialect=self.dialect,
            file_name=name,
            sha256=sha256,
            delivery_morning=kw.pop("delivery_morning", None),
            prefix=self.prefix,
            schema=self.schema,
            **kw,
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query on a fresh connection (sees only committed data)."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            rows = [tuple(row) for row in cur.fetchall()]
            conn.rollback()
            return rows
        finally:
            conn.close()

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Full contents of the three tables, ordered (for exact before/after comparisons)."""
        n = self.names
        return {
            "files": self.query(f"SELECT * FROM {n.files} ORDER BY file_id"),
            "balances": self.query(f"SELECT * FROM {n.balances} ORDER BY 1, 2, 3"),
            "transactions": self.query(f"SELECT * FROM {n.transactions} ORDER BY 1, 2, 3, 4, 5"),
        }

    def transactions(self, principal: str) -> list[tuple[Any, ...]]:
        """(reconciled_on, file_id, sequence_no, text, sv, kf) of a principal, ordered."""
        n = self.names
        return self.query(
            "SELECT reconciled_on, file_id, sequence_no, transaction_text, amount_skatteverket_ore,"
            f" amount_kronofogden_ore FROM {n.transactions} WHERE principal = '{principal}' ORDER BY 1, 2, 3"
        )

    def balances(self) -> dict[tuple[str, str], tuple[str, int]]:
        """(principal, reconciled_on as ISO text) -> (file_id, balance)."""
        n = self.names
        rows = self.query(f"SELECT principal, reconciled_on, file_id, balance_skatteverket_ore FROM {n.balances}")
        return {(p, str(r)): (f, b) for p, r, f, b in rows}

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


KINDS = ["sqlite", "pg-psycopg2", "pg-psycopg3", "generic-sqlite", "generic-pg"]


def _sqlite_warehouse(kind: str, tmp_path: Path) -> Warehouse:
    path = tmp_path / "warehouse.db"
    dialect = "generic" if kind.startswith("generic") else "sqlite"
    return Warehouse(kind, dialect, lambda: sqlite3.connect(path), "skattekonto_", None)


def _pg_warehouse(kind: str) -> tuple[Warehouse, Callable[[], None]]:
    require_postgres()
    token = uuid.uuid4().hex[:12]
    if kind == "pg-psycopg3":
        import psycopg

        prefix, schema = f"t{token}_", None

        def connect() -> Any:
            return psycopg.connect(PG_DSN)

        def cleanup() -> None:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                for view in reversed(VIEW_SUFFIXES):
                    conn.execute(f'DROP VIEW IF EXISTS "{prefix}{view}" CASCADE')
                for table in ("transaction_feed", "balance_history", "transactions", "balances", "files"):
                    conn.execute(f'DROP TABLE IF EXISTS "{prefix}{table}" CASCADE')

        return Warehouse(kind, "postgresql", connect, prefix, schema), cleanup

    import psycopg2

    schema = f"test_load_{token}"
    admin = psycopg2.connect(PG_DSN)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE SCHEMA "{schema}"')
    admin.close()

    def connect2() -> Any:
        return psycopg2.connect(PG_DSN)

    def cleanup2() -> None:
        conn = psycopg2.connect(PG_DSN)
        conn.autocommit = True
        conn.cursor().execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()

    dialect = "generic" if kind == "generic-pg" else "postgresql"
    return Warehouse(kind, dialect, connect2, "skattekonto_", schema), cleanup2


@pytest.fixture(params=KINDS)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """An empty warehouse (tables created) on each load path in turn."""
    yield from _warehouse(request.param, tmp_path)


@pytest.fixture(params=["sqlite", "pg-psycopg3"])
def fast_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """An empty warehouse on the two production paths only (for the bigger tests)."""
    yield from _warehouse(request.param, tmp_path)


@pytest.fixture(params=["pg-psycopg2", "pg-psycopg3"])
def pg_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """An empty warehouse on PostgreSQL's COPY paths (psycopg2 and psycopg 3)."""
    yield from _warehouse(request.param, tmp_path)


def _warehouse(kind: str, tmp_path: Path) -> Iterator[Warehouse]:
    cleanup: Callable[[], None] | None = None
    if kind in SQLITE_KINDS:
        wh = _sqlite_warehouse(kind, tmp_path)
    else:
        wh, cleanup = _pg_warehouse(kind)
    try:
        wh.ensure()
        yield wh
    finally:
        wh.close()
        for extra in wh.extra_cleanup:
            extra()
        if cleanup is not None:
            cleanup()


@pytest.fixture
def sqlite_conn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    conn_id = f"wh_{uuid.uuid4().hex[:8]}"
    db = tmp_path / "warehouse.db"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    return conn_id, db


@pytest.fixture
def pg_conn(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    require_postgres()
    import psycopg

    conn_id = f"pg_{uuid.uuid4().hex[:8]}"
    schema = f"test_op_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "login": "postgres", "schema": "test", "port": 5432}),
    )
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield conn_id, schema
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
