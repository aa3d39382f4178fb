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
generic drivers, text ``COPY`` for PostgreSQL through psycopg2 or psycopg 3). The parser's
:class:`~airflow_provider_skattekonto.domain.records.TransactionBatch` columns go into those batches
without one Python object per row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import logging
import re
import sys
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from airflow_provider_skattekonto.checksums import sha256_of
from airflow_provider_skattekonto.domain.identifiers import InvalidIdentifierError, normalize_organisation_number
from airflow_provider_skattekonto.domain.records import (
    Balance,
    FileHeader,
    FileTrailer,
    Record,
    Transaction,
    TransactionBatch,
)
from airflow_provider_skattekonto.exceptions import SkattekontoError
from airflow_provider_skattekonto.loading.change_feed import feed_names, record_changes
from airflow_provider_skattekonto.loading.names import (
    BALANCE_COLUMNS,
    DEFAULT_PREFIX,
    DIALECTS,
    TRANSACTION_COLUMNS,
    Dialect,
    SnapshotLoadError,
    TableNames,
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

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_UTC = dt.timezone.utc
# Rows buffered before a round trip. SQLite: executemany batch; PostgreSQL: one COPY statement.
_BATCH_ROWS: dict[str, int] = {"sqlite": 20_000, "postgresql": 50_000, "generic": 5_000}


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


def _idle(conn: Any) -> bool:
    """True when a PostgreSQL connection (psycopg 3 or psycopg2) has no transaction open."""
    status = getattr(getattr(conn, "info", None), "transaction_status", None)  # psycopg 3
    if status is None and hasattr(conn, "get_transaction_status"):  # psycopg2
        status = conn.get_transaction_status()
    return status is not None and int(status) == 0  # IDLE is 0 in both


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
    transactions_new: int = 0  # change feed: transactions that first appeared in this file
    transactions_gone: int = 0  # change feed: transactions of replaced snapshots no longer in this file

    def to_dict(self) -> dict[str, Any]:
        """A JSON-simple dict of every field."""
        return asdict(self)


# ------------------------------------------------------------------------------------- value helpers


def _ts(value: dt.datetime) -> str:
    """Canonical text form of an aware datetime: UTC, microseconds, '+00:00' (sorts as text)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise SnapshotLoadError(f"Naive datetime {value.isoformat()} given: timestamps must be timezone-aware.")
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


# -------------------------------------------------------------------------------------------- sinks


class _IsoDates(dict):  # type: ignore[type-arg]
    """date -> ISO text, memoized (a file holds few distinct dates); None -> None."""

    def __missing__(self, key: dt.date | None) -> str | None:
        value = None if key is None else key.isoformat()
        self[key] = value
        return value


class _SameDates(dict):  # type: ignore[type-arg]
    """Dates passed to the driver as ``datetime.date`` (generic dialect)."""

    def __missing__(self, key: dt.date | None) -> dt.date | None:
        return key


class _Sink:
    """Writes one file's rows: transactions as they stream, balances and deletes of replaced snapshots
    at :meth:`flush` (called before any other statement on the connection, and at the end).

    Deletes touch only rows of *other* files (the transactions key includes ``file_id``), and old balance
    rows are deleted before the new ones are inserted, so the order of the batches is free.
    """

    def __init__(self, cur: Any, names: TableNames, orderer: str, file_id: str, batch: int) -> None:
        self.cur = cur
        self.names = names
        self.orderer = orderer
        self.file_id = file_id
        self.batch = batch
        self.replaced: list[tuple[str, dt.date]] = []
        self.balances: list[Balance] = []
        self.inserted = 0
        self.deleted: int | None = 0

    def start_principal(self, balance: Balance) -> None:
        """Called for each principal to load, before its transactions."""
        raise NotImplementedError

    def add(self, tx: Transaction) -> None:
        """One transaction of the current principal."""
        raise NotImplementedError

    def add_batch(self, batch: TransactionBatch) -> None:
        """Transactions of the current principal, as the parser's columns."""
        for tx in batch.transactions():
            self.add(tx)

    def flush(self) -> None:
        """Send everything buffered; afterwards the connection is free for other statements."""
        self._send_transactions()
        if self.replaced:
            self._delete(self.replaced)
            self.replaced = []
        if self.balances:
            self._insert_balances(self.balances)
            self.balances = []

    def abort(self) -> None:
        """Called on failure, before the rollback: end any operation in progress on the connection."""

    def _add_deleted(self, count: int) -> None:
        if self.deleted is not None:
            self.deleted = None if count < 0 else self.deleted + count

    def _send_transactions(self) -> None:
        raise NotImplementedError

    def _delete(self, keys: list[tuple[str, dt.date]]) -> None:
        raise NotImplementedError

    def _insert_balances(self, balances: list[Balance]) -> None:
        raise NotImplementedError


class _ExecutemanySink(_Sink):
    """``executemany`` of prepared statements in batches: SQLite, and any DB-API driver (``generic``)."""

    def __init__(
        self,
        cur: Any,
        names: TableNames,
        orderer: str,
        file_id: str,
        batch: int,
        *,
        params: _Params,
        dates_as_text: bool,
    ) -> None:
        super().__init__(cur, names, orderer, file_id, batch)
        self.params = params
        self.dates: dict[Any, Any] = _IsoDates() if dates_as_text else _SameDates()
        self.rows: list[tuple[Any, ...]] = []
        self.principal = ""
        self.period: Any = None
        cols = ", ".join(TRANSACTION_COLUMNS)
        marks = ", ".join("?" * len(TRANSACTION_COLUMNS))
        self.sql_tx = params.sql(f"INSERT INTO {names.transactions} ({cols}) VALUES ({marks})")
        # SQLite: batches of the parser's text columns, converted by SQLite ('' is absent; öre as text)
        text_rows = dates_as_text and params.style == "qmark"
        self.text_batches: list[Iterator[tuple[Any, ...]]] | None = [] if text_rows else None
        self.text_rows = 0
        ore = "CAST(NULLIF(?, '') AS INTEGER)"
        self.sql_tx_text = (
            f"INSERT INTO {names.transactions} ({cols}) VALUES (?, ?, ?, ?, ?, NULLIF(?, ''), ?, NULLIF(?, ''), ?, "
            f"{ore}, {ore})"
        )
        cols = ", ".join(BALANCE_COLUMNS)
        marks = ", ".join("?" * len(BALANCE_COLUMNS))
        self.sql_balance = params.sql(f"INSERT INTO {names.balances} ({cols}) VALUES ({marks})")
        key = "orderer = ? AND principal = ? AND reconciled_on = ?"
        self.sql_delete_balance = params.sql(f"DELETE FROM {names.balances} WHERE {key}")
        self.sql_delete_tx = params.sql(f"DELETE FROM {names.transactions} WHERE {key} AND file_id <> ?")

    def start_principal(self, balance: Balance) -> None:
        self.balances.append(balance)
        self.principal = balance.principal
        self.period = self.dates[balance.reconciled_on]

    def add(self, tx: Transaction) -> None:
        dates = self.dates
        rows = self.rows
        rows.append(
            (
                self.orderer,
                self.principal,
                self.period,
                self.file_id,
                tx.sequence,
                tx.transaction_id,
                dates[tx.transaction_date],
                dates[tx.interest_date],
                tx.text,
                tx.amount_skatteverket_ore,
                tx.amount_kronofogden_ore,
            )
        )
        if len(rows) >= self.batch:
            self._send_transactions()

    def add_batch(self, batch: TransactionBatch) -> None:
        if self.text_batches is None:
            super().add_batch(batch)
            return
        first, count = batch.first_sequence, len(batch)
        self.text_batches.append(
            zip(
                itertools.repeat(self.orderer, count),
                itertools.repeat(self.principal, count),
                itertools.repeat(self.period, count),
                itertools.repeat(self.file_id, count),
                range(first, first + count),
                batch.transaction_id,
                batch.transaction_date,
                batch.interest_date,
                batch.text,
                batch.amount_skatteverket_ore,
                batch.amount_kronofogden_ore,
                strict=True,
            )
        )
        self.text_rows += count
        if self.text_rows >= self.batch:
            self._send_transactions()

    def _send_transactions(self) -> None:
        if self.rows:
            self.cur.executemany(self.sql_tx, self.params.many(self.rows))
            self.inserted += len(self.rows)
            self.rows = []
        if self.text_rows:
            assert self.text_batches is not None
            self.cur.executemany(self.sql_tx_text, itertools.chain.from_iterable(self.text_batches))
            self.inserted += self.text_rows
            self.text_batches, self.text_rows = [], 0

    def _delete(self, keys: list[tuple[str, dt.date]]) -> None:
        p, dates = self.params, self.dates
        self.cur.executemany(self.sql_delete_tx, p.many([(self.orderer, k, dates[r], self.file_id) for k, r in keys]))
        self._add_deleted(self.cur.rowcount)
        self.cur.executemany(self.sql_delete_balance, p.many([(self.orderer, k, dates[r]) for k, r in keys]))

    def _insert_balances(self, balances: list[Balance]) -> None:
        dates = self.dates
        rows = [
            (
                self.orderer,
                b.principal,
                dates[b.reconciled_on],
                self.file_id,
                b.balance_skatteverket_ore,
                b.balance_kronofogden_ore,
                b.interest_skatteverket_ore,
                _ts(b.last_updated),
                dates[b.next_reconciliation_on],
            )
            for b in balances
        ]
        self.cur.executemany(self.sql_balance, self.params.many(rows))


_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    return _NULL if value is None else value.translate(_COPY_ESCAPES)


def _copy_value(value: object) -> str:
    return _NULL if value is None else str(value)


class _PostgresSink(_Sink):
    """PostgreSQL deletes of replaced snapshots: one set-based ``DELETE ... USING unnest(...)`` each."""

    def __init__(self, cur: Any, names: TableNames, orderer: str, file_id: str, batch: int) -> None:
        super().__init__(cur, names, orderer, file_id, batch)
        using = " USING unnest(%s::text[], %s::date[]) AS k (principal, reconciled_on)"
        match = "orderer = %s AND {a}.principal = k.principal AND {a}.reconciled_on = k.reconciled_on"
        self.sql_delete_tx = (
            f"DELETE FROM {names.transactions} AS t{using} WHERE t.{match.format(a='t')} AND t.file_id <> %s"
        )
        self.sql_delete_balance = f"DELETE FROM {names.balances} AS b{using} WHERE b.{match.format(a='b')}"
        self.copy_tx = f"COPY {names.transactions} ({', '.join(TRANSACTION_COLUMNS)}) FROM STDIN"
        self.copy_balance = f"COPY {names.balances} ({', '.join(BALANCE_COLUMNS)}) FROM STDIN"

    def _delete(self, keys: list[tuple[str, dt.date]]) -> None:
        principals = [k for k, _ in keys]
        periods = [r for _, r in keys]
        self.cur.execute(self.sql_delete_tx, (principals, periods, self.orderer, self.file_id))
        self._add_deleted(self.cur.rowcount)
        self.cur.execute(self.sql_delete_balance, (principals, periods, self.orderer))


_COPY_CHUNK = 1 << 20  # characters of COPY text buffered before they are sent


class _CopyTextSink(_PostgresSink):
    """Text ``COPY`` of the transactions, formatted here and sent as bytes in chunks of about 1 MiB
    (the driver-specific part is :meth:`_send`); balances go in one ``COPY`` at each flush."""

    def __init__(self, cur: Any, names: TableNames, orderer: str, file_id: str, batch: int, encoding: str) -> None:
        super().__init__(cur, names, orderer, file_id, batch)
        self.encoding = encoding
        self.parts: list[str] = []
        self.size = 0  # characters in parts
        self.rows = 0  # rows in parts
        self.head = ""
        self.orderer_text = _copy_text(orderer)
        self.file_id_text = _copy_text(file_id)

    def start_principal(self, balance: Balance) -> None:
        self.balances.append(balance)
        self.head = (
            f"{self.orderer_text}\t{_copy_text(balance.principal)}\t{balance.reconciled_on.isoformat()}"
            f"\t{self.file_id_text}"
        )

    def add(self, tx: Transaction) -> None:
        interest = tx.interest_date
        tid = tx.transaction_id
        sv = tx.amount_skatteverket_ore
        kf = tx.amount_kronofogden_ore
        null = _NULL
        self._buffer(
            f"{self.head}\t{tx.sequence}\t{null if tid is None else tid.translate(_COPY_ESCAPES)}"
            f"\t{tx.transaction_date.isoformat()}\t{null if interest is None else interest.isoformat()}"
            f"\t{tx.text.translate(_COPY_ESCAPES)}\t{null if sv is None else sv}"
            f"\t{null if kf is None else kf}\n",
            1,
        )

    def add_batch(self, batch: TransactionBatch) -> None:
        ids, texts = batch.transaction_id, batch.text
        if "\\" in "".join(texts) or "\\" in "".join(ids):
            ids = [value.translate(_COPY_ESCAPES) for value in ids]
            texts = [value.translate(_COPY_ESCAPES) for value in texts]
        first, count = batch.first_sequence, len(batch)
        # The parser's columns hold no tab, line break or other control character; '' is absent
        # (never two absent fields in a row but for one absent amount next to the other).
        data = "\n".join(
            map(
                "\t".join,
                zip(
                    itertools.repeat(self.head, count),
                    map(str, range(first, first + count)),
                    ids,
                    batch.transaction_date,
                    batch.interest_date,
                    texts,
                    batch.amount_skatteverket_ore,
                    batch.amount_kronofogden_ore,
                    strict=True,
                ),
            )
        )
        data = (data + "\n").replace("\t\t", "\t\\N\t").replace("\t\t", "\t\\N\t").replace("\t\n", "\t\\N\n")
        self._buffer(data, count)

    def _buffer(self, text: str, rows: int) -> None:
        self.parts.append(text)
        self.size += len(text)
        self.rows += rows
        if self.size >= _COPY_CHUNK or self.rows >= self.batch:
            self._send_parts()

    def _send_parts(self) -> None:
        if self.parts:
            data = "".join(self.parts).encode(self.encoding)
            rows = self.rows
            self.parts, self.size, self.rows = [], 0, 0
            self._send(data, rows)

    def _send(self, data: bytes, rows: int) -> None:
        raise NotImplementedError

    def _balance_copy_data(self, balances: list[Balance]) -> bytes:
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
                    _NULL if b.next_reconciliation_on is None else b.next_reconciliation_on.isoformat(),
                )
            )
            + "\n"
            for b in balances
        ]
        return "".join(lines).encode(self.encoding)


class _Psycopg3Sink(_CopyTextSink):
    """psycopg 3: one ``COPY`` stays open while the transactions stream (``Copy.write`` of each chunk);
    it is closed only when another statement is needed (a new reconciliation period's prefetch, and
    the end)."""

    def __init__(self, cur: Any, names: TableNames, orderer: str, file_id: str, batch: int, encoding: str) -> None:
        super().__init__(cur, names, orderer, file_id, batch, encoding)
        self.copy: Any = None
        self.copy_cm: Any = None
        self.pending = 0

    def _send(self, data: bytes, rows: int) -> None:
        if self.copy is None:
            self.copy_cm = self.cur.copy(self.copy_tx)
            self.copy = self.copy_cm.__enter__()
        self.copy.write(data)
        self.pending += rows

    def _send_transactions(self) -> None:
        self._send_parts()
        if self.copy_cm is not None:
            cm, self.copy_cm, self.copy = self.copy_cm, None, None
            cm.__exit__(None, None, None)
            self.inserted += self.pending
            self.pending = 0

    def abort(self) -> None:
        if self.copy_cm is not None:
            cm, self.copy_cm, self.copy = self.copy_cm, None, None
            with suppress(Exception):
                cm.__exit__(SnapshotLoadError, SnapshotLoadError("load aborted"), None)

    def _insert_balances(self, balances: list[Balance]) -> None:
        with self.cur.copy(self.copy_balance) as copy:
            copy.write(self._balance_copy_data(balances))


class _Psycopg2Sink(_CopyTextSink):
    """psycopg2: one ``copy_expert`` per chunk, sent by a helper thread while the next chunk is
    formatted (psycopg2 releases the GIL during network I/O). Only one thread uses the connection at
    a time: every other statement waits for the chunk in flight."""

    def __init__(self, cur: Any, names: TableNames, orderer: str, file_id: str, batch: int, encoding: str) -> None:
        super().__init__(cur, names, orderer, file_id, batch, encoding)
        self.executor: Any = None
        self.in_flight: Any = None
        self.in_flight_rows = 0

    def _send(self, data: bytes, rows: int) -> None:
        self._wait()
        if self.executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skattekonto-copy")
        self.in_flight = self.executor.submit(self.cur.copy_expert, self.copy_tx, io.BytesIO(data), 1 << 16)
        self.in_flight_rows = rows

    def _wait(self) -> None:
        if self.in_flight is not None:
            future, self.in_flight = self.in_flight, None
            future.result()
            self.inserted += self.in_flight_rows
            self.in_flight_rows = 0

    def _send_transactions(self) -> None:
        self._send_parts()
        self._wait()
        if self.executor is not None:
            self.executor.shutdown()
            self.executor = None

    def abort(self) -> None:
        if self.in_flight is not None:
            with suppress(Exception):
                self.in_flight.result()
            self.in_flight = None
        if self.executor is not None:
            self.executor.shutdown()
            self.executor = None

    def _insert_balances(self, balances: list[Balance]) -> None:
        self.cur.copy_expert(self.copy_balance, io.BytesIO(self._balance_copy_data(balances)), 1 << 16)


# ------------------------------------------------------------------------------------------- loading


def _make_sink(conn: Any, cur: Any, dialect: str, names: TableNames, orderer: str, file_id: str, batch: int) -> _Sink:
    if dialect == "postgresql":
        driver = _driver_module(conn)
        if driver == "psycopg":
            return _Psycopg3Sink(cur, names, orderer, file_id, batch, conn.info.encoding)
        if driver == "psycopg2":
            from psycopg2.extensions import encodings

            return _Psycopg2Sink(cur, names, orderer, file_id, batch, encodings.get(conn.encoding, conn.encoding))
    params = _Params(_paramstyle(conn, dialect))
    return _ExecutemanySink(cur, names, orderer, file_id, batch, params=params, dates_as_text=dialect == "sqlite")


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


@dataclass(slots=True)
class _Counts:
    principals: int = 0
    transactions: int = 0
    amount_sum: int = 0
    balance_sum: int = 0
    loaded: int = 0
    replaced: int = 0
    skipped: int = 0
    balance_sum_loaded: int = 0


def _stream(
    it: Iterator[Record | TransactionBatch], db: _Db, sink: _Sink, header: FileHeader, file_name: str
) -> _Counts:
    """The single pass over the body: decide per principal at its Balance, stream the loaded rows."""
    c = _Counts()
    orderer = header.orderer
    version = (_ts(header.created_at), header.file_id)
    periods: dict[dt.date, dict[str, tuple[str, str]]] = {}
    seen: set[tuple[str, dt.date]] = set()
    principal: str | None = None
    loading = False
    transactions = amount_sum = 0
    add = sink.add
    add_batch = sink.add_batch
    trailer: FileTrailer | None = None
    index = 1
    for rec in it:
        index += 1
        if type(rec) is TransactionBatch:
            if rec.principal != principal or trailer is not None:
                break
            transactions += len(rec)
            amount_sum += rec.amount_sum_ore
            if loading:
                add_batch(rec)
            index += len(rec) - 1  # records are counted as rows
        elif isinstance(rec, Transaction):
            if rec.principal != principal or trailer is not None:
                break
            transactions += 1
            amount = rec.amount_skatteverket_ore
            if amount is not None:
                amount_sum += amount
            amount = rec.amount_kronofogden_ore
            if amount is not None:
                amount_sum += amount
            if loading:
                add(rec)
        elif isinstance(rec, Balance):
            if trailer is not None:
                break
            principal = rec.principal
            key = (principal, rec.reconciled_on)
            if key in seen:
                raise SnapshotLoadError(
                    f"{file_name}: record {index}: principal {principal} appears twice for "
                    f"reconciliation {rec.reconciled_on.isoformat()}."
                )
            seen.add(key)
            c.principals += 1
            c.balance_sum += rec.balance_skatteverket_ore
            stored_versions = periods.get(rec.reconciled_on)
            if stored_versions is None:
                sink.flush()  # the connection must be free for the prefetch
                stored_versions = periods[rec.reconciled_on] = db.versions(orderer, rec.reconciled_on)
            stored = stored_versions.get(principal)
            loading = stored is None or stored < version
            if loading:
                c.loaded += 1
                c.balance_sum_loaded += rec.balance_skatteverket_ore
                if stored is not None:
                    c.replaced += 1
                    sink.replaced.append(key)
                sink.start_principal(rec)
            else:
                c.skipped += 1
        elif isinstance(rec, FileTrailer) and trailer is None:
            trailer = rec
        else:
            break
    else:
        rec = None
    if rec is not None:  # left the loop early: a record out of place
        if trailer is not None:
            problem = f"record {index} ({type(rec).__name__}) follows the trailer"
        elif isinstance(rec, (Transaction, TransactionBatch)):
            problem = (
                f"record {index}: transaction for principal {rec.principal} outside its block "
                f"(current principal: {principal})"
            )
        else:
            problem = f"record {index} is an unexpected {type(rec).__name__}"
        raise SnapshotLoadError(f"{file_name}: {problem}.")
    if trailer is None:
        raise SnapshotLoadError(f"{file_name}: the records end without a trailer; the file is incomplete.")
    c.transactions, c.amount_sum = transactions, amount_sum
    counted = (c.principals, c.transactions, c.amount_sum)
    declared = (trailer.principal_count, trailer.transaction_count, trailer.amount_sum_ore)
    if counted != declared:
        raise SnapshotLoadError(
            f"{file_name}: the trailer declares principals/transactions/amount sum {declared}, "
            f"but the file holds {counted}; the file is inconsistent, nothing was loaded."
        )
    sink.flush()
    return c


def load_answer_file(
    conn: Any,
    records: Iterable[Record | TransactionBatch],
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
    ``Transaction`` records, then ``FileTrailer``; runs of transactions may come as ``TransactionBatch``
    as :func:`~airflow_provider_skattekonto.domain.answer_file.parse_answer_batches` yields them); it is
    consumed once, lazily. The tables must exist
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
        try:
            expected_orderer = normalize_organisation_number(expected_orderer)
        except InvalidIdentifierError as exc:
            raise SnapshotLoadError(f"{file_name}: expected orderer {expected_orderer!r} is invalid: {exc}") from None

    it = iter(records)
    fresh = dialect == "postgresql" and _idle(conn)
    with _transaction(conn, dialect) as cur:
        if fresh:  # the snapshot decisions must see what a load we waited for committed
            cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        _check_tables(cur, dialect, prefix, schema)
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
            f"INSERT INTO {names.files} ({', '.join(_FILE_COLUMNS)}) VALUES ({', '.join('?' * len(_FILE_COLUMNS))})",
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
        batch = batch_rows or _BATCH_ROWS[dialect]
        sink = _make_sink(conn, cur, dialect, names, orderer, header.file_id, batch)
        try:
            c = _stream(it, db, sink, header, file_name)
        except BaseException:
            sink.abort()
            raise
        feed = record_changes(
            db.execute, dialect=dialect, names=feed_names(prefix, schema), orderer=orderer, file_id=header.file_id
        )
        db.execute(
            f"UPDATE {names.files} SET principal_count = ?, transaction_count = ?, amount_sum_ore = ?,"
            " balance_sum_ore = ?, principals_loaded = ?, principals_replaced = ?,"
            " principals_skipped_older = ?,"
            " transactions_inserted = ?, transactions_deleted = ? WHERE file_id = ?",
            (
                c.principals,
                c.transactions,
                c.amount_sum,
                c.balance_sum,
                c.loaded,
                c.replaced,
                c.skipped,
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
        principal_count=c.principals,
        transaction_count=c.transactions,
        amount_sum_ore=c.amount_sum,
        balance_sum_ore=c.balance_sum,
        principals_loaded=c.loaded,
        principals_replaced=c.replaced,
        principals_skipped_older=c.skipped,
        transactions_inserted=sink.inserted,
        transactions_deleted=sink.deleted,
        balance_sum_loaded_ore=c.balance_sum_loaded,
        loaded_at=_ts(loaded_at),
        duration_seconds=round(time.monotonic() - started, 6),
        transactions_new=feed.new,
        transactions_gone=feed.gone,
    )
    log.info(
        "%s (file_id %s): %d principals loaded (%d replacing older snapshots), %d skipped as older; "
        "%d transactions inserted, %s deleted, in %.2f s.",
        file_name,
        header.file_id,
        c.loaded,
        c.replaced,
        c.skipped,
        sink.inserted,
        sink.deleted,
        result.duration_seconds,
    )
    return result


# ------------------------------------------------------------------------------------ from a file


class FileChecksumError(SkattekontoError):
    """The bytes read do not match the expected sha256 (or size): the file changed or is not the one
    announced. Nothing was loaded."""


class VerifiedChunks:
    """Iterate a binary stream in chunks while hashing it; :meth:`finish` reads any rest and raises
    :class:`FileChecksumError` when the sha256 (or size) differs from the expected one."""

    def __init__(
        self, stream: BinaryIO, *, name: str, sha256: str, size: int | None = None, chunk_size: int = 1 << 20
    ) -> None:
        self.stream = stream
        self.name = name
        self.expected = sha256.strip().lower()
        self.expected_size = size
        self.chunk_size = chunk_size
        self.digest = hashlib.sha256()
        self.size = 0
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        read = self.stream.read
        update = self.digest.update
        while True:
            chunk = read(self.chunk_size)
            if not chunk:
                break
            update(chunk)
            self.size += len(chunk)
            yield chunk
        self.finish()

    def finish(self) -> None:
        """Read what is left, then compare size and sha256 with the expected values."""
        if self.finished:
            return
        while chunk := self.stream.read(self.chunk_size):
            self.digest.update(chunk)
            self.size += len(chunk)
        self.finished = True
        actual = self.digest.hexdigest()
        if self.expected_size is not None and self.size != self.expected_size:
            raise FileChecksumError(
                f"{self.name}: read {self.size} bytes, expected {self.expected_size} (sha256 {actual}); the "
                "file is not the one announced (truncated or replaced?). Nothing was loaded; download it again."
            )
        if actual != self.expected:
            raise FileChecksumError(
                f"{self.name}: sha256 of the bytes read is {actual}, expected {self.expected}; the file is not "
                "the one announced (changed after download?). Nothing was loaded; download it again."
            )


def load_answer_stream(
    conn: Any,
    stream: BinaryIO,
    *,
    dialect: str,
    file_name: str,
    sha256: str,
    size: int | None = None,
    delivery_morning: dt.datetime | None = None,
    prefix: str = DEFAULT_PREFIX,
    schema: str | None = None,
    expected_orderer: str | None = None,
    batch_rows: int | None = None,
) -> LoadResult:
    """Parse an answer file from a binary stream and load it (:func:`load_answer_file`), verifying the
    stream's sha256 (and size) before the commit.

    The check runs when the parser has consumed the stream, inside the load's transaction: a mismatch
    raises :class:`FileChecksumError` and rolls everything back. For a no-op (already loaded) the rest
    of the stream is still read and verified, so a changed file never reports success.
    """
    from airflow_provider_skattekonto.domain.answer_file import parse_answer_batches

    chunks = VerifiedChunks(stream, name=file_name, sha256=sha256, size=size)
    parsed = parse_answer_batches(chunks, source_name=file_name)

    def verified() -> Generator[Record | TransactionBatch, None, None]:
        yield from parsed
        chunks.finish()  # before the loader's commit: a mismatch rolls back

    records = verified()
    try:
        result = load_answer_file(
            conn,
            records,
            dialect=dialect,
            file_name=file_name,
            sha256=sha256,
            delivery_morning=delivery_morning,
            prefix=prefix,
            schema=schema,
            expected_orderer=expected_orderer,
            batch_rows=batch_rows,
        )
    finally:
        records.close()
        close = getattr(parsed, "close", None)
        if close is not None:
            close()
    if result.noop:
        chunks.finish()
    return result
