"""The PostgreSQL sinks: set-based deletes of replaced snapshots and text ``COPY`` of the rows, through
one ``COPY`` kept open while the rows stream: psycopg 3 (``Copy.write``) or psycopg2 (one ``copy_expert`` on a
helper thread, fed through a queue). No Airflow import; the drivers are never imported here (the connection brings
them).
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
from contextlib import suppress
from typing import Any

from airflow_provider_skattekonto.domain.records import Balance, Transaction, TransactionBatch
from airflow_provider_skattekonto.loading.names import (
    BALANCE_COLUMNS,
    TRANSACTION_COLUMNS,
    SnapshotLoadError,
    TableNames,
)
from airflow_provider_skattekonto.loading.sink import _Sink
from airflow_provider_skattekonto.loading.timestamps import _ts

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


class _CopyFeed:
    """A file-like source for one psycopg2 ``copy_expert`` running on a helper thread: ``read`` hands over what
    the loading thread queues in ``chunks`` (at most ``_QUEUED_CHUNKS`` wait): the next chunk, ``b""`` for the
    end, or an exception, which ``read`` raises (psycopg2 then ends the ``COPY`` with a failure and the server
    discards it)."""

    def __init__(self) -> None:
        import queue

        self.chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=_QUEUED_CHUNKS)

    def read(self, size: int = -1) -> bytes:  # psycopg2 sends whatever it gets, whatever the size
        chunk = self.chunks.get()
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk


_QUEUED_CHUNKS = 2  # chunks of about 1 MiB waiting for the helper thread: memory stays flat


class _Psycopg2Sink(_CopyTextSink):
    """psycopg2: one ``COPY`` stays open while the transactions stream, as with psycopg 3: ``copy_expert``
    runs on a helper thread and reads the chunks from a short queue (psycopg2 releases the GIL while it
    sends), so the server ingests while the next chunks are parsed and formatted. It is closed only when
    another statement is needed (a new reconciliation period's prefetch, and the end): only one thread uses
    the connection at a time."""

    def __init__(self, cur: Any, names: TableNames, orderer: str, file_id: str, batch: int, encoding: str) -> None:
        super().__init__(cur, names, orderer, file_id, batch, encoding)
        self.executor: Any = None
        self.copy: Any = None  # the running copy_expert (a Future)
        self.feed: _CopyFeed | None = None
        self.pending = 0

    def _send(self, data: bytes, rows: int) -> None:
        if self.feed is None:
            if self.executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skattekonto-copy")
            self.feed = _CopyFeed()
            self.copy = self.executor.submit(self.cur.copy_expert, self.copy_tx, self.feed, _COPY_CHUNK)
        self._put(data)
        self.pending += rows

    def _put(self, item: bytes | BaseException) -> None:
        """Queue ``item`` for the running ``COPY``; if the ``COPY`` has failed, raise its error."""
        import queue

        assert self.feed is not None
        while True:
            try:
                self.feed.chunks.put(item, timeout=0.05)
                return
            except queue.Full:
                if self.copy.done():  # failed: it reads nothing more
                    self.copy.result()
                    raise SnapshotLoadError("the COPY of the transactions ended early") from None

    def _end_copy(self, item: bytes | BaseException) -> None:
        """Queue the end (``b""``) or an error and wait for the ``COPY`` to finish."""
        if self.feed is not None:
            try:
                self._put(item)
                self.copy.result()
            finally:
                self.feed = self.copy = None

    def _send_transactions(self) -> None:
        self._send_parts()
        if self.feed is not None:
            self._end_copy(b"")
            self.inserted += self.pending
            self.pending = 0
        self._shutdown()

    def _shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
            self.executor = None

    def abort(self) -> None:
        with suppress(Exception):
            self._end_copy(SnapshotLoadError("load aborted"))
        self._shutdown()

    def _insert_balances(self, balances: list[Balance]) -> None:
        self.cur.copy_expert(self.copy_balance, io.BytesIO(self._balance_copy_data(balances)), 1 << 16)
