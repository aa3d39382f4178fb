"""What every sink does: it writes one file's rows while the loader streams them, and the deletes of the
snapshots they replace. The drivers' sinks are in ``executemany_sink.py`` (SQLite and any DB-API driver)
and ``postgres_sink.py`` (``COPY`` through psycopg2 or psycopg 3). No Airflow import.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow_provider_skattekonto.domain.records import Balance, Transaction, TransactionBatch
from airflow_provider_skattekonto.loading.names import TableNames


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
