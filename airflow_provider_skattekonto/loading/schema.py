"""The warehouse layout's version, its check, and serialised table creation. No Airflow import.

:data:`SCHEMA_VERSION` names the layout that ``ddl_statements`` and ``feed_ddl_statements`` create. Bump
it with every change of those statements, and describe the migration in ``docs/warehouse-schema.md``.
The layout itself is read from those statements, so there is one place per rule: a table that exists is
compared column by column (names, and types on SQLite and PostgreSQL) with what this version creates, and
any difference fails fast with :class:`SnapshotLoadError` naming it and how to migrate. The version is
recorded in ``<prefix>schema_version`` so a newer layout is recognised too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from airflow_provider_skattekonto.loading.names import SnapshotLoadError, TableNames

__all__ = [
    "SCHEMA_VERSION",
    "check_layout",
    "check_version",
    "ddl_lock",
    "expected_layout",
    "record_version",
    "stored_version",
    "version_table",
]

SCHEMA_VERSION = 1

_CREATE = re.compile(r"CREATE TABLE (?P<name>\S+) \((?P<body>.*)\)", re.S)
_COLUMN = re.compile(r"^\s*(?P<name>[a-z_][a-z0-9_]*) (?P<type>[A-Z]+(?:\s*\([0-9, ]+\))?)", re.M)
# PostgreSQL's information_schema.columns.data_type for the types our DDL uses
_PG_TYPES = {
    "TEXT": "text",
    "CHAR": "character",
    "VARCHAR": "character varying",
    "DATE": "date",
    "TIMESTAMPTZ": "timestamp with time zone",
    "INTEGER": "integer",
    "BIGINT": "bigint",
}


def version_table(names: TableNames) -> str:
    """The quoted name of the table recording the schema version (beside ``names.files``)."""
    return names.files.removesuffix('files"') + 'schema_version"'


def _unquoted(name: str) -> tuple[str | None, str]:
    """``(schema, table)`` of a quoted, optionally schema-qualified name (``"s"."t"``)."""
    parts = [part.strip('"') for part in name.split(".")]
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def expected_layout(statements: list[str]) -> dict[str, dict[str, str]]:
    """``quoted table -> {column: declared type}`` from ``CREATE TABLE`` statements."""
    layout: dict[str, dict[str, str]] = {}
    for statement in statements:
        match = _CREATE.match(statement.strip())
        if match is None:
            continue
        columns = {
            m["name"]: re.sub(r"\s+", "", m["type"])
            for m in _COLUMN.finditer(match["body"])
            if m["name"] not in ("primary", "unique", "foreign", "check", "constraint")
        }
        layout[match["name"]] = columns
    return layout


def _actual_columns(cur: Any, dialect: str, table: str) -> dict[str, str] | None:
    """``{column: type}`` of an existing table (types lower-case; '' where unknown); None if it is missing."""
    schema, name = _unquoted(table)
    if dialect == "postgresql":
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            f" WHERE table_schema = {'current_schema()' if schema is None else _literal(schema)}"
            f" AND table_name = {_literal(name)} ORDER BY ordinal_position"
        )
        rows = cur.fetchall()
        return {str(c): str(t).lower() for c, t in rows} or None
    if dialect == "sqlite":
        qualifier = f'"{schema}".' if schema else ""
        cur.execute(f'PRAGMA {qualifier}table_info("{name}")')
        rows = cur.fetchall()
        return {str(row[1]): str(row[2]).lower() for row in rows} or None
    return None  # generic: no portable catalogue; checked by _generic_columns


def _literal(text: str) -> str:
    """A SQL string literal of a validated identifier (letters, digits, underscores only)."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", text):
        raise SnapshotLoadError(f"Invalid identifier {text!r}")
    return f"'{text}'"


def _type_matches(dialect: str, declared: str, actual: str) -> bool:
    if dialect == "sqlite":
        return declared.lower() == actual
    base = declared.split("(", 1)[0].upper()
    return _PG_TYPES.get(base, base.lower()) == actual


def check_layout(cur: Any, dialect: str, layout: dict[str, dict[str, str]]) -> None:
    """Raise :class:`SnapshotLoadError` if an existing table differs from ``layout`` (missing tables pass)."""
    if dialect not in ("sqlite", "postgresql"):
        return
    problems: list[str] = []
    fixes: list[str] = []
    for table, columns in layout.items():
        actual = _actual_columns(cur, dialect, table)
        if actual is None:
            continue
        missing = [column for column in columns if column not in actual]
        if missing:
            problems.append(f"{table} lacks column(s) {', '.join(missing)}")
            fixes.extend(f"ALTER TABLE {table} ADD COLUMN {column} {columns[column]};" for column in missing)
        for column, declared in columns.items():
            if column in actual and not _type_matches(dialect, declared, actual[column]):
                problems.append(f"{table}.{column} is {actual[column]}, expected {declared}")
    if problems:
        how = (
            f" To migrate: {' '.join(fixes)} (fill the new columns as docs/warehouse-schema.md describes)"
            if fixes
            else ""
        )
        raise SnapshotLoadError(
            f"The warehouse tables do not have the layout this provider writes (schema version {SCHEMA_VERSION}): "
            f"{'; '.join(problems)}.{how} Or rename the old tables (or set another table_prefix/table_schema), "
            "let the loader create new ones and reload the archived files; nothing was loaded."
        )


def stored_version(cur: Any, dialect: str, table: str) -> int | None:
    """The version recorded in ``table`` (None if the table or its row is missing)."""
    if _actual_columns(cur, dialect, table) is None:
        return None
    cur.execute(f"SELECT MAX(version) FROM {table}")
    row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


def check_version(version: int | None, table: str) -> None:
    """Fail fast on tables written by a newer (or an unknown older) layout."""
    if version is None or version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise SnapshotLoadError(
            f"The warehouse tables have schema version {version} ({table}), newer than this provider's "
            f"{SCHEMA_VERSION}: upgrade the provider (or use another table_prefix/table_schema); nothing was loaded."
        )
    raise SnapshotLoadError(
        f"The warehouse tables have schema version {version} ({table}); this provider writes version "
        f"{SCHEMA_VERSION}. Migrate them as docs/warehouse-schema.md describes (section 'Schema versions'), "
        "then set the version row to the new number; nothing was loaded."
    )


def record_version(cur: Any, table: str, int_type: str) -> None:
    """Create ``table`` if needed and record :data:`SCHEMA_VERSION` in it (once)."""
    cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (version {int_type} NOT NULL)")
    cur.execute(f"SELECT COUNT(*) FROM {table} WHERE version = {int(SCHEMA_VERSION)}")
    if not cur.fetchone()[0]:
        cur.execute(f"INSERT INTO {table} (version) VALUES ({int(SCHEMA_VERSION)})")


@contextmanager
def ddl_lock(conn: Any, dialect: str, key_text: str, transaction: Any) -> Iterator[None]:
    """Serialise table creation across connections: a PostgreSQL session advisory lock (SQLite's
    ``BEGIN IMMEDIATE`` already serialises; ``generic`` has no portable lock)."""
    if dialect != "postgresql":
        yield
        return
    key = int.from_bytes(hashlib.sha256(f"ddl|{key_text}".encode()).digest()[:8], "big", signed=True)
    with transaction(conn, dialect) as cur:
        cur.execute(f"SELECT pg_advisory_lock({key})")
        cur.fetchall()
    try:
        yield
    finally:
        with suppress(Exception), transaction(conn, dialect) as cur:  # a dead session drops it anyway
            cur.execute(f"SELECT pg_advisory_unlock({key})")
            cur.fetchall()
