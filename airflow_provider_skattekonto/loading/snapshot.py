"""Snapshot-safe, idempotent, all-or-nothing loading of an answer file into a SQL warehouse.

No Airflow import: everything here works on a plain DB-API 2 connection (``sqlite3``, ``psycopg2``,
``psycopg`` 3, or any other driver through the ``generic`` dialect).

Semantics (see ``docs/warehouse-schema.md``):

* A file is a snapshot per principal, keyed by ``(orderer, principal, reconciled_on)``. For each
  principal in the file, the file's balance and transactions replace the stored ones for that key,
  unless the stored snapshot comes from a newer file (``FileHeader.created_at``, then ``file_id``), in
  which case the principal is left untouched. Other keys are never touched. Rows are never
  deduplicated by content: ``Transaction.sequence`` keeps identical transactions apart.
* A file already loaded (same sha256 or same ``file_id``) is a no-op reported as such.
* The whole file is loaded in one database transaction: on any error (parse error, constraint,
  lost connection) everything is rolled back, and the files table gets its row only on success.

One streaming pass: the decision per principal is taken at its ``Balance`` record from the stored
snapshot versions of that reconciliation period (prefetched once per period: memory O(principals)),
and transactions of loaded principals go out in bounded batches (``executemany`` for SQLite and
generic drivers, ``COPY`` for PostgreSQL through psycopg2 or psycopg 3).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any, Literal

from airflow_provider_skattekonto.domain.identifiers import normalize_organisation_number
from airflow_provider_skattekonto.domain.records import Balance, FileHeader, FileTrailer, Record, Transaction
from airflow_provider_skattekonto.exceptions import SkattekontoError

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

log = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgresql", "generic"]
DIALECTS: tuple[str, ...] = ("sqlite", "postgresql", "generic")
DEFAULT_PREFIX = "skattekonto_"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MAX_PREFIX = 40  # longest table name must stay under PostgreSQL's 63-byte identifier limit
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_UTC = dt.timezone.utc

# Rows buffered before a round trip. SQLite: executemany batch; PostgreSQL: one COPY statement.
_BATCH_ROWS: dict[str, int] = {"sqlite": 20_000, "postgresql": 50_000, "generic": 5_000}


class SnapshotLoadError(SkattekontoError, ValueError):
    """The records cannot be loaded as a file snapshot (structure, counts, arguments or tables)."""


# --------------------------------------------------------------------------------------------- names


@dataclass(frozen=True, slots=True)
class TableNames:
    """Quoted, optionally schema-qualified names of the three tables."""

    files: str
    balances: str
    transactions: str


def _validate_identifier(value: str, what: str, max_length: int) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value) or len(value) > max_length:
        raise SnapshotLoadError(
            f"Invalid {what} {value!r}: use only ASCII letters, digits and underscores, start with a letter "
            f"or underscore, at most {max_length} characters (it becomes part of SQL identifiers)."
        )
    return value


def table_names(prefix: str = DEFAULT_PREFIX, schema: str | None = None) -> TableNames:
    """The quoted table names for ``prefix`` (validated against SQL injection) in ``schema``."""
    _validate_identifier(prefix, "table prefix", _MAX_PREFIX)
    qualifier = ""
    if schema is not None:
        qualifier = f'"{_validate_identifier(schema, "schema name", 63)}".'
    return TableNames(
        files=f'{qualifier}"{prefix}files"',
        balances=f'{qualifier}"{prefix}balances"',
        transactions=f'{qualifier}"{prefix}transactions"',
    )


def _check_dialect(dialect: str) -> Dialect:
    if dialect not in DIALECTS:
        raise SnapshotLoadError(f"Unknown dialect {dialect!r}: use one of {', '.join(DIALECTS)}.")
    return dialect  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- DDL

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
_BALANCE_COLUMNS = (
    "orderer",
    "principal",
    "reconciled_on",
    "file_id",
    "balance_skatteverket_ore",
    "balance_kronofogden_ore",
    "interest_skatteverket_ore",
    "last_updated",
    "next_reconciliation_on",
)
_TRANSACTION_COLUMNS = (
    "orderer",
    "principal",
    "reconciled_on",
    "file_id",
    "sequence_no",
    "transaction_id",
    "transaction_date",
    "interest_date",
    "transaction_text",
    "amount_skatteverket_ore",
    "amount_kronofogden_ore",
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


def ensure_tables(
    conn: Any, *, dialect: str, prefix: str = DEFAULT_PREFIX, schema: str | None = None
) -> None:
    """Create the three tables if they are missing, and commit.

    Existing tables are left as they are (no migration). ``sqlite`` and ``postgresql`` use
    ``CREATE TABLE IF NOT EXISTS``; ``generic`` probes each table with a ``SELECT`` and creates it
    when the probe fails.
    """
    dialect = _check_dialect(dialect)
    names = table_names(prefix, schema)
    statements = ddl_statements(dialect=dialect, prefix=prefix, schema=schema)
    tables = (names.files, names.balances, names.transactions)
    with _transaction(conn, dialect) as cur:
        if dialect != "generic":
            for statement in statements:
                cur.execute(statement.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1))
            return
    # generic: one short transaction per table, so a failed probe never poisons the next statement
    for table, statement in zip(tables, statements, strict=True):
        try:
            with _transaction(conn, dialect) as cur:
                cur.execute(f"SELECT 1 FROM {table} WHERE 1 = 0")
                cur.fetchall()
        except Exception:
            with _transaction(conn, dialect) as cur:
                cur.execute(statement)


# -------------------------------------------------------------------------------------------- result


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load did; :meth:`to_dict` is JSON-simple (for XCom)."""

    file_name: str
    sha256: str
    file_id: str | None
    orderer: str | None
    created_at: str | None  # ISO 8601 (UTC) of FileHeader.created_at
    dialect: str
    noop: bool  # True: the file was already loaded, nothing was written
    noop_reason: str | None
    principal_count: int  # principals in the file
    transaction_count: int  # transactions in the file
    amount_sum_ore: int  # file control sum (all transactions)
    balance_sum_ore: int  # sum of balance_skatteverket_ore over all principals in the file
    principals_loaded: int  # principals whose snapshot was written (new or replacing an older one)
    principals_replaced: int  # of those, how many replaced a stored snapshot from an older file
    principals_skipped_older: int  # left untouched because a newer file's snapshot is stored
    transactions_inserted: int
    transactions_deleted: int | None  # rows of replaced snapshots removed; None if the driver cannot tell
    balance_sum_loaded_ore: int  # sum of balance_skatteverket_ore over the loaded principals
    loaded_at: str | None  # ISO 8601 (UTC); for a no-op: when the earlier load happened
    duration_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-simple dict of every field."""
        return asdict(self)


# ------------------------------------------------------------------------------------- value helpers


def _ts(value: dt.datetime) -> str:
    """Canonical text form of an aware datetime: UTC, microseconds, '+00:00' (sorts as text)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise SnapshotLoadError(
            f"Naive datetime {value.isoformat()} given: timestamps must be timezone-aware."
        )
    return value.astimezone(_UTC).isoformat(timespec="microseconds")


def _stored_ts(value: Any) -> str:
    """Canonical text form of a timestamp read back from any dialect (datetime or ISO text)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return _ts(value)


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


# ------------------------------------------------------------------------------------- transactions


@contextmanager
def _transaction(conn: Any, dialect: str) -> Iterator[Any]:
    """One database transaction on ``conn``: commit on success, roll back on any error.

    Joins a transaction the caller left open (and commits or rolls it back with ours). A driver in
    autocommit mode is switched out of it for the duration; SQLite gets an explicit ``BEGIN IMMEDIATE``
    (takes the write lock up front, so concurrent loaders serialize instead of deadlocking).
    """
    restore_autocommit = False
    sqlite_sql_control = False
    if dialect == "sqlite" and hasattr(conn, "in_transaction"):
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
            log.warning(
                "Rollback failed (%s); the server discards the uncommitted transaction.", rollback_error
            )
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


# -------------------------------------------------------------------------------------------- sinks


class _Sink:
    """Buffers one file's writes and sends them in bounded batches, in a safe order per batch."""

    def __init__(self, cur: Any, names: TableNames, orderer: str, file_id: str) -> None:
        self.cur = cur
        self.names = names
        self.orderer = orderer
        self.file_id = file_id
        self.replaced: list[tuple[str, dt.date]] = []
        self.balances: list[Balance] = []
        self.pending = 0  # buffered transaction rows
        self.inserted = 0
        self.deleted: int | None = 0

    def start_principal(self, balance: Balance) -> None:
        """Called for each principal to load, before its transactions."""
        raise NotImplementedError

    def add(self, tx: Transaction) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Send everything buffered: deletes of replaced snapshots, then balances, then transactions."""
        if self.replaced:
            self._delete(self.replaced)
            self.replaced = []
        if self.balances:
            self._insert_balances(self.balances)
            self.balances = []
        if self.pending:
            self._insert_transactions()
            self.inserted += self.pending
            self.pending = 0

    def _add_deleted(self, count: int) -> None:
        if self.deleted is not None:
            self.deleted = None if count < 0 else self.deleted + count

    def _delete(self, keys: list[tuple[str, dt.date]]) -> None:
        raise NotImplementedError

    def _insert_balances(self, balances: list[Balance]) -> None:
        raise NotImplementedError

    def _insert_transactions(self) -> None:
        raise NotImplementedError


class _ExecutemanySink(_Sink):
    """``executemany`` with prepared statements: SQLite, and any DB-API driver (``generic``)."""

    def __init__(
        self, cur: Any, names: TableNames, orderer: str, file_id: str, *, params: _Params, dates_as_text: bool
    ) -> None:
        super().__init__(cur, names, orderer, file_id)
        self.params = params
        self.date: Any = dt.date.isoformat if dates_as_text else (lambda value: value)
        self.rows: list[tuple[Any, ...]] = []
        self.head: tuple[Any, ...] = ()
        cols = ", ".join(_TRANSACTION_COLUMNS)
        marks = ", ".join("?" * len(_TRANSACTION_COLUMNS))
        self.sql_tx = params.sql(f"INSERT INTO {names.transactions} ({cols}) VALUES ({marks})")
        cols = ", ".join(_BALANCE_COLUMNS)
        marks = ", ".join("?" * len(_BALANCE_COLUMNS))
        self.sql_balance = params.sql(f"INSERT INTO {names.balances} ({cols}) VALUES ({marks})")
        key = "orderer = ? AND principal = ? AND reconciled_on = ?"
        self.sql_delete_balance = params.sql(f"DELETE FROM {names.balances} WHERE {key}")
        self.sql_delete_tx = params.sql(f"DELETE FROM {names.transactions} WHERE {key} AND file_id <> ?")

    def start_principal(self, balance: Balance) -> None:
        self.balances.append(balance)
        self.head = (self.orderer, balance.principal, self.date(balance.reconciled_on), self.file_id)

    def add(self, tx: Transaction) -> None:
        date = self.date
        interest = tx.interest_date
        self.rows.append(
            (
                *self.head,
                tx.sequence,
                tx.transaction_id,
                date(tx.transaction_date),
                None if interest is None else date(interest),
                tx.text,
                tx.amount_skatteverket_ore,
                tx.amount_kronofogden_ore,
            )
        )
        self.pending += 1

    def _delete(self, keys: list[tuple[str, dt.date]]) -> None:
        p, date = self.params, self.date
        self.cur.executemany(
            self.sql_delete_tx, p.many([(self.orderer, k, date(r), self.file_id) for k, r in keys])
        )
        self._add_deleted(self.cur.rowcount)
        self.cur.executemany(self.sql_delete_balance, p.many([(self.orderer, k, date(r)) for k, r in keys]))

    def _insert_balances(self, balances: list[Balance]) -> None:
        date = self.date
        rows = [
            (
                self.orderer,
                b.principal,
                date(b.reconciled_on),
                self.file_id,
                b.balance_skatteverket_ore,
                b.balance_kronofogden_ore,
                b.interest_skatteverket_ore,
                _ts(b.last_updated),
                None if b.next_reconciliation_on is None else date(b.next_reconciliation_on),
            )
            for b in balances
        ]
        self.cur.executemany(self.sql_balance, self.params.many(rows))

    def _insert_transactions(self) -> None:
        self.cur.executemany(self.sql_tx, self.params.many(self.rows))
        self.rows = []


_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def _copy_value(value: object) -> str:
    return "\\N" if value is None else str(value)


class _CopySink(_Sink):
    """PostgreSQL: ``COPY ... FROM STDIN`` (text format) per batch, through psycopg2 or psycopg 3."""

    def __init__(self, cur: Any, names: TableNames, orderer: str, file_id: str, *, psycopg3: bool) -> None:
        super().__init__(cur, names, orderer, file_id)
        self.psycopg3 = psycopg3
        self.lines: list[str] = []
        self.head = ""
        self.copy_tx = f"COPY {names.transactions} ({', '.join(_TRANSACTION_COLUMNS)}) FROM STDIN"
        self.copy_balance = f"COPY {names.balances} ({', '.join(_BALANCE_COLUMNS)}) FROM STDIN"
        self.sql_delete_tx = (
            f"DELETE FROM {names.transactions} AS t"
            " USING unnest(%s::text[], %s::date[]) AS k (principal, reconciled_on)"
            " WHERE t.orderer = %s AND t.principal = k.principal AND t.reconciled_on = k.reconciled_on"
            " AND t.file_id <> %s"
        )
        self.sql_delete_balance = (
            f"DELETE FROM {names.balances} AS b"
            " USING unnest(%s::text[], %s::date[]) AS k (principal, reconciled_on)"
            " WHERE b.orderer = %s AND b.principal = k.principal AND b.reconciled_on = k.reconciled_on"
        )
        self.orderer_text = _copy_text(orderer)
        self.file_id_text = _copy_text(file_id)

    def start_principal(self, balance: Balance) -> None:
        self.balances.append(balance)
        self.head = (
            f"{self.orderer_text}\t{_copy_text(balance.principal)}\t{balance.reconciled_on.isoformat()}"
            f"\t{self.file_id_text}\t"
        )

    def add(self, tx: Transaction) -> None:
        interest = tx.interest_date
        tid = tx.transaction_id
        sv = tx.amount_skatteverket_ore
        kf = tx.amount_kronofogden_ore
        null = _NULL
        self.lines.append(
            f"{self.head}{tx.sequence}\t{null if tid is None else tid.translate(_COPY_ESCAPES)}"
            f"\t{tx.transaction_date.isoformat()}\t{null if interest is None else interest.isoformat()}"
            f"\t{tx.text.translate(_COPY_ESCAPES)}\t{null if sv is None else sv}"
            f"\t{null if kf is None else kf}\n"
        )
        self.pending += 1

    def _copy(self, statement: str, data: str) -> None:
        if self.psycopg3:
            with self.cur.copy(statement) as copy:
                copy.write(data)
        else:
            self.cur.copy_expert(statement, io.StringIO(data), size=1 << 20)

    def _delete(self, keys: list[tuple[str, dt.date]]) -> None:
        principals = [k for k, _ in keys]
        periods = [r for _, r in keys]
        self.cur.execute(self.sql_delete_tx, (principals, periods, self.orderer, self.file_id))
        self._add_deleted(self.cur.rowcount)
        self.cur.execute(self.sql_delete_balance, (principals, periods, self.orderer))

    def _insert_balances(self, balances: list[Balance]) -> None:
        lines = [
            "\t".join(
                (
                    self.orderer_text,
                    _copy_text(b.principal),
                    b.reconciled_on.isoformat(),
                    self.file_id_text,
                    str(b.balance_skatteverket_ore),
                    _copy_value(b.balance_kronofogden_ore),
                    _copy_value(b.interest_skatteverket_ore),
                    _ts(b.last_updated),
                    "\\N" if b.next_reconciliation_on is None else b.next_reconciliation_on.isoformat(),
                )
            )
            + "\n"
            for b in balances
        ]
        self._copy(self.copy_balance, "".join(lines))

    def _insert_transactions(self) -> None:
        data = "".join(self.lines)
        self.lines = []
        self._copy(self.copy_tx, data)


# ------------------------------------------------------------------------------------------- loading


def _make_sink(conn: Any, cur: Any, dialect: str, names: TableNames, orderer: str, file_id: str) -> _Sink:
    if dialect == "postgresql":
        driver = _driver_module(conn)
        if driver in ("psycopg2", "psycopg"):
            return _CopySink(cur, names, orderer, file_id, psycopg3=driver == "psycopg")
    params = _Params(_paramstyle(conn, dialect))
    return _ExecutemanySink(cur, names, orderer, file_id, params=params, dates_as_text=dialect == "sqlite")


class _Db:
    """Small statements of a load, in the connection's paramstyle and value conventions."""

    def __init__(self, conn: Any, cur: Any, dialect: str, names: TableNames) -> None:
        self.cur = cur
        self.dialect = dialect
        self.names = names
        self.params = _Params(_paramstyle(conn, dialect))

    def date(self, value: dt.date | None) -> Any:
        if value is None:
            return None
        return value.isoformat() if self.dialect == "sqlite" else value

    def ts(self, value: dt.datetime | None) -> Any:
        if value is None:
            return None
        return value.astimezone(_UTC) if self.dialect == "postgresql" else _ts(value)

    def execute(self, statement: str, values: Sequence[Any] = ()) -> Any:
        self.cur.execute(self.params.sql(statement), self.params.args(values))
        return self.cur

    def lock_orderer(self, orderer: str) -> None:
        """Serialize loads of one orderer (the snapshot decisions read what concurrent loads write)."""
        if self.dialect == "postgresql":
            digest = hashlib.sha256(f"{self.names.files}|{orderer}".encode()).digest()
            self.execute(
                "SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))",
                (int.from_bytes(digest[:8], "big", signed=True),),
            )
            self.cur.fetchall()
        # sqlite: BEGIN IMMEDIATE already holds the database write lock.
        # generic: no portable lock; callers serialize loads per orderer (documented).

    def loaded(self, sha256: str, file_id: str) -> tuple[str, str, Any] | None:
        """``(file_id, sha256, loaded_at)`` of a stored file with this sha256 or file_id, if any."""
        row = self.execute(
            f"SELECT file_id, sha256, loaded_at FROM {self.names.files} WHERE sha256 = ? OR file_id = ?",
            (sha256, file_id),
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]).strip(), row[2])

    def versions(self, orderer: str, reconciled_on: dt.date) -> dict[str, tuple[str, str]]:
        """Stored snapshot versions ``principal -> (created_at, file_id)`` for one reconciliation period."""
        rows = self.execute(
            f"SELECT b.principal, f.created_at, b.file_id FROM {self.names.balances} b"
            f" LEFT JOIN {self.names.files} f ON f.file_id = b.file_id"
            " WHERE b.orderer = ? AND b.reconciled_on = ?",
            (orderer, self.date(reconciled_on)),
        ).fetchall()
        return {str(principal): (_stored_ts(created), str(file_id)) for principal, created, file_id in rows}


def _noop(
    file_name: str, sha256: str, header: FileHeader, dialect: str, found: tuple[str, str, Any], started: float
) -> LoadResult:
    found_id, found_sha, found_at = found
    if found_sha == sha256:
        reason = f"already loaded: a file with sha256 {sha256} was loaded as file_id {found_id!r}"
    else:
        reason = (
            f"already loaded: file_id {found_id!r} was loaded from a file with a different sha256 "
            f"({found_sha}); nothing written. If Skatteverket re-issued the file under the same id, "
            "investigate before reloading."
        )
    return LoadResult(
        file_name=file_name,
        sha256=sha256,
        file_id=header.file_id,
        orderer=header.orderer,
        created_at=_ts(header.created_at),
        dialect=dialect,
        noop=True,
        noop_reason=reason,
        principal_count=0,
        transaction_count=0,
        amount_sum_ore=0,
        balance_sum_ore=0,
        principals_loaded=0,
        principals_replaced=0,
        principals_skipped_older=0,
        transactions_inserted=0,
        transactions_deleted=0,
        balance_sum_loaded_ore=0,
        loaded_at=_stored_ts(found_at) or None,
        duration_seconds=round(time.monotonic() - started, 6),
    )


def load_answer_file(
    conn: Any,
    records: Iterable[Record],
    *,
    dialect: str,
    file_name: str,
    sha256: str,
    delivery_morning: dt.datetime | None = None,
    prefix: str = DEFAULT_PREFIX,
    schema: str | None = None,
    expected_orderer: str | None = None,
    batch_rows: int | None = None,
) -> LoadResult:
    """Load one answer file's records into the warehouse tables, in one transaction, and commit.

    ``records`` is the parser's stream (``FileHeader``, then per principal a ``Balance`` and its
    ``Transaction`` records, then ``FileTrailer``); it is consumed once, lazily. The tables must exist
    (:func:`ensure_tables`). ``sha256`` is the file's checksum (hex). Any exception (from the records,
    the checks here, or the database) rolls everything back and is re-raised; on success the
    transaction, including the file's row in the files table, is committed. A file already loaded (same
    sha256 or file_id) writes nothing and returns a result with ``noop=True``.
    """
    started = time.monotonic()
    dialect = _check_dialect(dialect)
    names = table_names(prefix, schema)
    sha256 = sha256.strip().lower() if isinstance(sha256, str) else sha256
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise SnapshotLoadError(f"Invalid sha256 {sha256!r} for {file_name}: expected 64 hex digits.")
    if delivery_morning is not None:
        _ts(delivery_morning)  # validates awareness
    if expected_orderer is not None:
        expected_orderer = normalize_organisation_number(expected_orderer)

    it = iter(records)
    with _transaction(conn, dialect) as cur:
        db = _Db(conn, cur, dialect, names)
        header = next(it, None)
        if not isinstance(header, FileHeader):
            raise SnapshotLoadError(
                f"{file_name}: the first record must be the file header, got {type(header).__name__}."
            )
        orderer = header.orderer
        if expected_orderer is not None and normalize_organisation_number(orderer) != expected_orderer:
            raise SnapshotLoadError(
                f"{file_name}: the file is for orderer {orderer}, but orderer {expected_orderer} was "
                "expected; check that the right file was delivered for this connection."
            )
        db.lock_orderer(orderer)
        found = db.loaded(sha256, header.file_id)
        if found is not None:
            result = _noop(file_name, sha256, header, dialect, found, started)
            log.info("%s: %s", file_name, result.noop_reason)
            return result  # nothing written; the (empty) transaction ends here

        loaded_at = dt.datetime.now(_UTC)
        db.execute(
            f"INSERT INTO {names.files} ({', '.join(_FILE_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(_FILE_COLUMNS))})",
            (
                header.file_id,
                file_name,
                sha256,
                orderer,
                header.layout_version,
                db.ts(header.created_at),
                db.ts(delivery_morning),
                db.ts(loaded_at),
                *([0] * 8),
                0,
            ),
        )
        version = (_ts(header.created_at), header.file_id)
        sink = _make_sink(conn, cur, dialect, names, orderer, header.file_id)
        batch = batch_rows or _BATCH_ROWS[dialect]

        periods: dict[dt.date, dict[str, tuple[str, str]]] = {}
        seen: set[tuple[str, dt.date]] = set()
        principal: str | None = None
        loading = False
        principals = transactions = amount_sum = balance_sum = 0
        loaded = replaced = skipped = 0
        balance_sum_loaded = 0
        trailer: FileTrailer | None = None

        for index, rec in enumerate(it, start=2):
            if trailer is not None:
                raise SnapshotLoadError(
                    f"{file_name}: record {index} ({type(rec).__name__}) follows the trailer."
                )
            kind = type(rec)
            if kind is Transaction:
                assert isinstance(rec, Transaction)
                if rec.principal != principal:
                    raise SnapshotLoadError(
                        f"{file_name}: record {index}: transaction for principal {rec.principal} outside its "
                        f"block (current principal: {principal})."
                    )
                transactions += 1
                if rec.amount_skatteverket_ore is not None:
                    amount_sum += rec.amount_skatteverket_ore
                if rec.amount_kronofogden_ore is not None:
                    amount_sum += rec.amount_kronofogden_ore
                if loading:
                    sink.add(rec)
                    if sink.pending >= batch:
                        sink.flush()
            elif kind is Balance:
                assert isinstance(rec, Balance)
                principal = rec.principal
                key = (principal, rec.reconciled_on)
                if key in seen:
                    raise SnapshotLoadError(
                        f"{file_name}: record {index}: principal {principal} appears twice for "
                        f"reconciliation {rec.reconciled_on.isoformat()}."
                    )
                seen.add(key)
                principals += 1
                balance_sum += rec.balance_skatteverket_ore
                stored_versions = periods.get(rec.reconciled_on)
                if stored_versions is None:
                    stored_versions = periods[rec.reconciled_on] = db.versions(orderer, rec.reconciled_on)
                stored = stored_versions.get(principal)
                loading = stored is None or stored < version
                if loading:
                    loaded += 1
                    balance_sum_loaded += rec.balance_skatteverket_ore
                    if stored is not None:
                        replaced += 1
                        sink.replaced.append(key)
                    sink.start_principal(rec)
                else:
                    skipped += 1
            elif kind is FileTrailer:
                assert isinstance(rec, FileTrailer)
                trailer = rec
            else:
                raise SnapshotLoadError(f"{file_name}: record {index} is an unexpected {kind.__name__}.")

        if trailer is None:
            raise SnapshotLoadError(
                f"{file_name}: the records end without a trailer; the file is incomplete."
            )
        counted = (principals, transactions, amount_sum)
        declared = (trailer.principal_count, trailer.transaction_count, trailer.amount_sum_ore)
        if counted != declared:
            raise SnapshotLoadError(
                f"{file_name}: the trailer declares principals/transactions/amount sum {declared}, "
                f"but the file holds {counted}; the file is inconsistent, nothing was loaded."
            )
        sink.flush()
        db.execute(
            f"UPDATE {names.files} SET principal_count = ?, transaction_count = ?, amount_sum_ore = ?,"
            " balance_sum_ore = ?, principals_loaded = ?, principals_replaced = ?,"
            " principals_skipped_older = ?,"
            " transactions_inserted = ?, transactions_deleted = ? WHERE file_id = ?",
            (
                principals,
                transactions,
                amount_sum,
                balance_sum,
                loaded,
                replaced,
                skipped,
                sink.inserted,
                sink.deleted,
                header.file_id,
            ),
        )
    result = LoadResult(
        file_name=file_name,
        sha256=sha256,
        file_id=header.file_id,
        orderer=orderer,
        created_at=_ts(header.created_at),
        dialect=dialect,
        noop=False,
        noop_reason=None,
        principal_count=principals,
        transaction_count=transactions,
        amount_sum_ore=amount_sum,
        balance_sum_ore=balance_sum,
        principals_loaded=loaded,
        principals_replaced=replaced,
        principals_skipped_older=skipped,
        transactions_inserted=sink.inserted,
        transactions_deleted=sink.deleted,
        balance_sum_loaded_ore=balance_sum_loaded,
        loaded_at=_ts(loaded_at),
        duration_seconds=round(time.monotonic() - started, 6),
    )
    log.info(
        "%s (file_id %s): %d principals loaded (%d replacing older snapshots), %d skipped as older; "
        "%d transactions inserted, %s deleted, in %.2f s.",
        file_name,
        header.file_id,
        loaded,
        replaced,
        skipped,
        sink.inserted,
        sink.deleted,
        result.duration_seconds,
    )
    return result
