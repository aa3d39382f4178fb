"""Table creation is serialised, and existing tables of another layout fail fast with a clear error.

Real PostgreSQL (fresh schema per test) and real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_skattekonto.loading import SnapshotLoadError, ensure_tables, load_answer_file, table_names
from airflow_provider_skattekonto.loading.schema import SCHEMA_VERSION, version_table

from .builders import at, fake_sha, header, org_principal, records
from .conftest import PG_DSN, require_postgres
from .test_snapshot import block


@pytest.fixture
def pg_schema() -> Iterator[str]:
    require_postgres()
    import psycopg

    schema = f"layout_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_concurrent_ensure_tables_into_a_fresh_schema(pg_schema: str) -> None:
    import psycopg

    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def run() -> None:
        try:
            with psycopg.connect(PG_DSN) as conn:
                start.wait(30)
                ensure_tables(conn, dialect="postgresql", schema=pg_schema)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with psycopg.connect(PG_DSN) as conn:
        [(version,)] = conn.execute(f"SELECT version FROM {version_table(table_names(schema=pg_schema))}").fetchall()
    assert version == SCHEMA_VERSION


def _old_layout(conn: Any, schema: str | None) -> None:
    """The files table without two columns, as an older release might have left it."""
    names = table_names(schema=schema)
    from airflow_provider_skattekonto.loading.tables import ddl_statements

    dialect = "postgresql" if schema else "sqlite"
    statement = ddl_statements(dialect=dialect, schema=schema)[0]
    statement = statement.replace("    balance_sum_ore", "    -- ").replace("    layout_version", "    -- ")
    statement = "\n".join(line for line in statement.splitlines() if "-- " not in line)
    cur = conn.cursor()
    cur.execute(statement)
    conn.commit()
    assert names.files in statement


def test_pg_older_layout_fails_fast_naming_the_difference(pg_schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        _old_layout(conn, pg_schema)
        with pytest.raises(SnapshotLoadError) as caught:
            ensure_tables(conn, dialect="postgresql", schema=pg_schema)
        text = str(caught.value)
        assert "layout_version" in text and "balance_sum_ore" in text and "ALTER TABLE" in text
        assert "skattekonto_files" in text and f"schema version {SCHEMA_VERSION}" in text
        # a load without ensure_tables (create_tables=False) fails the same way, not with UndefinedColumn
        with pytest.raises(SnapshotLoadError, match="layout_version"):
            load_answer_file(
                conn,
                records(header("F1", at(1)), [block(org_principal(1), 1)]),
                dialect="postgresql",
                file_name="f.txt",
                sha256=fake_sha("F1"),
                schema=pg_schema,
            )


def test_pg_other_column_types_fail_fast(pg_schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        ensure_tables(conn, dialect="postgresql", schema=pg_schema)
        names = table_names(schema=pg_schema)
        conn.execute(f"ALTER TABLE {names.files} ALTER COLUMN transactions_inserted TYPE TEXT")
        conn.commit()
        with pytest.raises(SnapshotLoadError, match=r"transactions_inserted is text, expected BIGINT"):
            ensure_tables(conn, dialect="postgresql", schema=pg_schema)


def test_pg_newer_schema_version_is_refused(pg_schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        ensure_tables(conn, dialect="postgresql", schema=pg_schema)
        conn.execute(f"UPDATE {version_table(table_names(schema=pg_schema))} SET version = {SCHEMA_VERSION + 1}")
        conn.commit()
        with pytest.raises(SnapshotLoadError, match="newer than this provider"):
            ensure_tables(conn, dialect="postgresql", schema=pg_schema)


def test_sqlite_older_layout_fails_fast(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    try:
        _old_layout(conn, None)
        with pytest.raises(SnapshotLoadError, match=r"lacks column.*layout_version"):
            ensure_tables(conn, dialect="sqlite")
    finally:
        conn.close()


def test_sqlite_fresh_tables_record_the_version_and_load(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    try:
        ensure_tables(conn, dialect="sqlite")
        ensure_tables(conn, dialect="sqlite")  # idempotent
        assert conn.execute(f"SELECT version FROM {version_table(table_names())}").fetchall() == [(SCHEMA_VERSION,)]
        result = load_answer_file(
            conn,
            records(header("F1", at(1)), [block(org_principal(1), 1)]),
            dialect="sqlite",
            file_name="f.txt",
            sha256=fake_sha("F1"),
        )
        assert result.principals_loaded == 1
    finally:
        conn.close()
