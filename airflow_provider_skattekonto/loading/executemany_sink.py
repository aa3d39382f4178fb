"""The ``executemany`` sink: SQLite, and any other DB-API driver (the ``generic`` dialect). No Airflow
import; no driver import.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

from airflow_provider_skattekonto.domain.records import Balance, Transaction, TransactionBatch
from airflow_provider_skattekonto.loading.dbapi import _Params
from airflow_provider_skattekonto.loading.names import BALANCE_COLUMNS, TRANSACTION_COLUMNS, TableNames
from airflow_provider_skattekonto.loading.sink import _Sink
from airflow_provider_skattekonto.loading.timestamps import _ts


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
