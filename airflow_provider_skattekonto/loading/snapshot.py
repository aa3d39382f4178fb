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

This module is the load itself: one transaction per file, the decision per principal, the result. What it
uses lives beside it: ``tables.py`` (the tables and ``ensure_tables``), ``source.py`` (the answer file's
bytes, verified), ``sink.py``, ``executemany_sink.py`` and ``postgres_sink.py`` (writing the rows),
``dbapi.py`` (driver, paramstyle, transaction) and ``timestamps.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
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
from airflow_provider_skattekonto.loading.change_feed import Occurrences, feed_names, record_changes
from airflow_provider_skattekonto.loading.dbapi import _driver_module, _idle, _Params, _paramstyle, _transaction
from airflow_provider_skattekonto.loading.executemany_sink import _ExecutemanySink
from airflow_provider_skattekonto.loading.names import (
    DEFAULT_PREFIX,
    DIALECTS,
    SnapshotLoadError,
    TableNames,
    _check_dialect,
    table_names,
)
from airflow_provider_skattekonto.loading.postgres_sink import _Psycopg2Sink, _Psycopg3Sink
from airflow_provider_skattekonto.loading.sink import _Sink
from airflow_provider_skattekonto.loading.source import FileChecksumError, VerifiedChunks
from airflow_provider_skattekonto.loading.tables import _FILE_COLUMNS, _check_tables, ddl_statements, ensure_tables
from airflow_provider_skattekonto.loading.timestamps import _UTC, _stored_ts, _ts

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
# Rows buffered before a round trip. SQLite: executemany batch; PostgreSQL: one COPY statement.
_BATCH_ROWS: dict[str, int] = {"sqlite": 20_000, "postgresql": 50_000, "generic": 5_000}


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
    occurrences: list[tuple[str, dt.date, int, int]] = field(default_factory=list)  # see change_feed.Occurrences


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
    repeats = Occurrences()
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
                repeats.add_batch(rec)
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
                repeats.add(rec)
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
                repeats.start(principal, rec.reconciled_on)
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
    c.occurrences = repeats.repeats
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
            db.execute,
            dialect=dialect,
            names=feed_names(prefix, schema),
            orderer=orderer,
            file_id=header.file_id,
            occurrences=c.occurrences,
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
