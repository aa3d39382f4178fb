"""Staged files for cloud warehouses: an answer file's rows as CSV and/or Parquet, one file per table, plus
a manifest. No Airflow import; the target is any path object with ``/`` and ``open(mode)``
(``ObjectStoragePath`` for ``s3://``, ``gs://``, ``file://``..., or ``pathlib.Path``).

One streaming pass over the parser's column batches: rows go out in bounded batches (memory flat in the
file size), the answer file's sha256 (and size) is verified at the end, and ``manifest.json`` is written
last, only then: **a staged file set is complete when its manifest exists**. The tables have the
warehouse tables' columns (``docs/warehouse-schema.md``); ``transactions`` and ``balances`` carry the
``file_id``. CSV: UTF-8, a header line, ``,`` separated, RFC 4180 quoting, an empty unquoted field is
NULL (texts are never empty in an answer file). Parquet (extra ``[parquet]``, ``pyarrow``): typed
columns (dates, UTC timestamps, 64-bit öre), one row group per batch.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from airflow_provider_skattekonto.domain.records import Balance, FileHeader, FileTrailer, Transaction, TransactionBatch
from airflow_provider_skattekonto.exceptions import SkattekontoError
from airflow_provider_skattekonto.loading.names import BALANCE_COLUMNS, TRANSACTION_COLUMNS

__all__ = ["FORMATS", "MANIFEST_NAME", "StagingError", "stage_answer_file"]

FORMATS = ("csv", "parquet")
MANIFEST_NAME = "manifest.json"
_UTC = dt.timezone.utc

FILE_COLUMNS = (
    "file_id",
    "file_name",
    "sha256",
    "orderer",
    "layout_version",
    "created_at",
    "delivery_morning",
    "principal_count",
    "transaction_count",
    "amount_sum_ore",
    "balance_sum_ore",
)
# logical types: s string, d date, t timestamp (UTC), i int32, b int64
_COLUMN_TYPES: dict[str, dict[str, str]] = {
    "transactions": dict(zip(TRANSACTION_COLUMNS, "ssdsisddsbb", strict=True)),
    "balances": dict(zip(BALANCE_COLUMNS, "ssdsbbbtd", strict=True)),
    "files": dict(zip(FILE_COLUMNS, "sssssttibbb", strict=True)),
}


class StagingError(SkattekontoError, ValueError):
    """The staged files cannot be written as asked (formats, missing ``pyarrow``, file structure)."""


class _Hashing(io.RawIOBase):
    """A binary sink that hashes and counts what it forwards to ``target``."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)

    def flush(self) -> None:
        if not self.target.closed:
            self.target.flush()

    def close(self) -> None:
        if not self.target.closed:
            self.target.close()
        super().close()

    def describe(self, name: str) -> dict[str, Any]:
        return {"name": name, "bytes": self.size, "sha256": self.digest.hexdigest()}


def _open(target: Any, name: str) -> _Hashing:
    return _Hashing((target / name).open("wb"))


class _CsvOut:
    def __init__(self, target: Any, table: str, columns: Sequence[str]) -> None:
        self.name = f"{table}.csv"
        self.raw = _open(target, self.name)
        self.text = io.TextIOWrapper(self.raw, encoding="utf-8", newline="", write_through=False)  # type: ignore[type-var]
        self.writer = csv.writer(self.text, lineterminator="\n")
        self.writer.writerow(columns)

    def write(self, columns: list[list[Any]]) -> None:
        self.writer.writerows(zip(*columns, strict=True))

    def close(self) -> dict[str, Any]:
        self.text.flush()
        self.text.detach()
        self.raw.close()
        return self.raw.describe(self.name)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:  # pragma: no cover - depends on the installation
        raise StagingError(
            "Parquet needs pyarrow: pip install 'airflow-provider-skattekonto[parquet]' (or stage formats=['csv'])."
        ) from None
    return pyarrow


def _arrow_type(pa: Any, kind: str) -> Any:
    return {
        "s": pa.string(),
        "d": pa.date32(),
        "t": pa.timestamp("us", tz="UTC"),
        "i": pa.int32(),
        "b": pa.int64(),
    }[kind]


def _arrow_available() -> bool:
    try:
        _pyarrow()
    except StagingError:
        return False
    return True


class _ArrowOut:
    """Parquet (``pyarrow.parquet``) or CSV (``pyarrow.csv``) from the table's record batches."""

    def __init__(self, target: Any, table: str, schema: Any, fmt: str) -> None:
        pa = _pyarrow()
        self.name = f"{table}.{fmt}"
        self.raw = _open(target, self.name)
        if fmt == "parquet":
            self.writer = pa.parquet.ParquetWriter(self.raw, schema, compression="zstd")
        else:
            import pyarrow.csv

            options = pyarrow.csv.WriteOptions(include_header=True, quoting_style="needed")
            self.writer = pyarrow.csv.CSVWriter(self.raw, schema, write_options=options)

    def write_batch(self, batch: Any) -> None:
        self.writer.write_batch(batch)

    def close(self) -> dict[str, Any]:
        self.writer.close()
        self.raw.close()
        return self.raw.describe(self.name)


class _Table:
    """One staged table: column buffers, flushed to every format's writer in bounded batches.

    With ``pyarrow`` installed, each batch becomes one Arrow record batch written as Parquet and/or CSV
    by Arrow's C++ writers; without it (CSV only) Python's ``csv`` module writes the rows.
    """

    def __init__(self, target: Any, name: str, columns: Sequence[str], formats: Sequence[str], batch: int) -> None:
        self.name = name
        self.columns = columns
        self.types = _COLUMN_TYPES[name]
        self.formats = list(formats)
        self.arrow = _arrow_available()
        self.outs: list[Any] = []
        if self.arrow:
            pa = self.pa = _pyarrow()
            self.schema = pa.schema([(c, _arrow_type(pa, self.types[c])) for c in columns])
            self.outs = [_ArrowOut(target, name, self.schema, f) for f in formats]
        else:
            self.outs = [_CsvOut(target, name, columns)]
        self.buffer: list[list[Any]] = [[] for _ in columns]
        self.batch = batch
        self.rows = 0
        self.pending = 0

    def extend(self, columns: Sequence[Iterable[Any]]) -> None:
        before = len(self.buffer[0])
        for buffer, values in zip(self.buffer, columns, strict=True):
            buffer.extend(values)
        self.pending += len(self.buffer[0]) - before
        if self.pending >= self.batch:
            self.flush()

    def _record_batch(self) -> Any:
        pa = self.pa
        arrays = []
        for column, values in zip(self.columns, self.buffer, strict=True):
            kind = self.types[column]
            if kind in ("d", "t"):  # ISO text (UTC for timestamps): Arrow parses it in C++
                arrays.append(pa.array(values, pa.string()).cast(_arrow_type(pa, kind)))
            else:
                arrays.append(pa.array(values, _arrow_type(pa, kind)))
        return pa.record_batch(arrays, schema=self.schema)

    def flush(self) -> None:
        if not self.pending:
            return
        if self.arrow:
            batch = self._record_batch()
            for out in self.outs:
                out.write_batch(batch)
        else:
            for out in self.outs:
                out.write(self.buffer)
        self.rows += self.pending
        self.pending = 0
        self.buffer = [[] for _ in self.columns]

    def close(self) -> dict[str, Any]:
        self.flush()
        described = {f: o.close() for f, o in zip(self.formats, self.outs, strict=True)}
        return {"rows": self.rows, "columns": list(self.columns), **described}

    def abort(self) -> None:
        for out in self.outs:
            if isinstance(out, _ArrowOut):
                with contextlib.suppress(Exception):  # best effort; the files are removed next
                    out.writer.close()
            with contextlib.suppress(Exception):
                out.raw.close()


def _iso(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


def _ts_text(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(_UTC).isoformat(timespec="microseconds")


@dataclass
class _Sums:
    tx_sv: int = 0
    tx_kf: int = 0
    balance_sv: int = 0
    balance_kf: int = 0
    principals: int = 0
    transactions: int = 0


def _int_sum(values: list[str]) -> int:
    return sum(map(int, filter(None, values)))


def stage_answer_file(
    stream: BinaryIO,
    target: Any,
    *,
    file_name: str,
    sha256: str,
    size: int | None = None,
    delivery_morning: dt.datetime | None = None,
    formats: Sequence[str] = FORMATS,
    batch_rows: int = 100_000,
) -> dict[str, Any]:
    """Parse the answer file in ``stream`` and write its tables under the folder ``target``; return the
    manifest (also written there as ``manifest.json``, last).

    Raises the parser's ``AnswerFileError`` or ``FileChecksumError`` (the stream is not the announced
    file); then no manifest is written and the table files written so far are removed (best effort).
    """
    from airflow_provider_skattekonto.domain.answer_file import parse_answer_batches
    from airflow_provider_skattekonto.loading.source import VerifiedChunks

    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise StagingError(f"formats={formats!r}: choose one or more of {', '.join(FORMATS)}.")
    if "parquet" in formats:
        _pyarrow()
    chunks = VerifiedChunks(stream, name=file_name, sha256=sha256, size=size)
    records = iter(parse_answer_batches(chunks, source_name=file_name))
    header = next(records)
    if not isinstance(header, FileHeader):  # pragma: no cover - the parser guarantees it
        raise StagingError(f"{file_name}: no header record")
    if hasattr(target, "mkdir"):
        target.mkdir(parents=True, exist_ok=True)
    tables: list[_Table] = []
    try:
        tx = _Table(target, "transactions", TRANSACTION_COLUMNS, formats, batch_rows)
        tables.append(tx)
        bal = _Table(target, "balances", BALANCE_COLUMNS, formats, max(1, batch_rows // 10))
        tables.append(bal)
        manifest = _stream(records, header, tx, bal, file_name)
        chunks.finish()
        files = _Table(target, "files", FILE_COLUMNS, formats, 1)
        tables.append(files)
        trailer = manifest.pop("_trailer")
        sums: _Sums = manifest.pop("_sums")
        files.extend(
            [
                [header.file_id],
                [file_name],
                [sha256],
                [header.orderer],
                [header.layout_version],
                [_ts_text(header.created_at)],
                [_ts_text(delivery_morning)],
                [trailer.principal_count],
                [trailer.transaction_count],
                [trailer.amount_sum_ore],
                [sums.balance_sv],
            ]
        )
        described = {t.name: t.close() for t in tables}
    except BaseException:
        for table in tables:
            table.abort()
        _remove(target, [f"{t}.{f}" for t in ("transactions", "balances", "files") for f in formats])
        raise
    described["transactions"]["sums"] = {
        "amount_skatteverket_ore": sums.tx_sv,
        "amount_kronofogden_ore": sums.tx_kf,
    }
    described["balances"]["sums"] = {
        "balance_skatteverket_ore": sums.balance_sv,
        "balance_kronofogden_ore": sums.balance_kf,
    }
    result = {
        "manifest_version": 1,
        "answer_file": {"name": file_name, "sha256": chunks.digest.hexdigest(), "bytes": chunks.size},
        "file_id": header.file_id,
        "orderer": header.orderer,
        "layout_version": header.layout_version,
        "created_at": _ts_text(header.created_at),
        "delivery_morning": _ts_text(delivery_morning),
        "trailer": {
            "principal_count": trailer.principal_count,
            "transaction_count": trailer.transaction_count,
            "amount_sum_ore": trailer.amount_sum_ore,
        },
        "formats": formats,
        "tables": described,
    }
    with (target / MANIFEST_NAME).open("wb") as handle:
        handle.write(json.dumps(result, indent=2, ensure_ascii=False).encode("utf-8"))
    return result


def _remove(target: Any, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(Exception):  # best effort
            path = target / name
            if path.exists():
                path.unlink()


def _stream(records: Any, header: FileHeader, tx: _Table, bal: _Table, file_name: str) -> dict[str, Any]:
    orderer, file_id = header.orderer, header.file_id
    sums = _Sums()
    principal = ""
    period = ""
    trailer: FileTrailer | None = None
    for rec in records:
        kind = type(rec)
        if kind is TransactionBatch:
            n = len(rec)
            if rec.principal != principal:
                raise StagingError(f"{file_name}: transactions of {rec.principal} outside its block")
            sv, kf = rec.amount_skatteverket_ore, rec.amount_kronofogden_ore
            sums.tx_sv += _int_sum(sv)
            sums.tx_kf += _int_sum(kf)
            sums.transactions += n
            first = rec.first_sequence
            tx.extend(
                [
                    [orderer] * n,
                    [principal] * n,
                    [period] * n,
                    [file_id] * n,
                    range(first, first + n),
                    [v or None for v in rec.transaction_id],
                    rec.transaction_date,
                    [v or None for v in rec.interest_date],
                    rec.text,
                    [int(v) if v else None for v in sv],
                    [int(v) if v else None for v in kf],
                ]
            )
        elif kind is Transaction:
            if rec.principal != principal:
                raise StagingError(f"{file_name}: transactions of {rec.principal} outside its block")
            sums.tx_sv += rec.amount_skatteverket_ore or 0
            sums.tx_kf += rec.amount_kronofogden_ore or 0
            sums.transactions += 1
            tx.extend(
                [
                    [orderer],
                    [principal],
                    [period],
                    [file_id],
                    [rec.sequence],
                    [rec.transaction_id],
                    [rec.transaction_date.isoformat()],
                    [_iso(rec.interest_date)],
                    [rec.text],
                    [rec.amount_skatteverket_ore],
                    [rec.amount_kronofogden_ore],
                ]
            )
        elif kind is Balance:
            principal, period = rec.principal, rec.reconciled_on.isoformat()
            sums.principals += 1
            sums.balance_sv += rec.balance_skatteverket_ore
            sums.balance_kf += rec.balance_kronofogden_ore or 0
            bal.extend(
                [
                    [orderer],
                    [principal],
                    [period],
                    [file_id],
                    [rec.balance_skatteverket_ore],
                    [rec.balance_kronofogden_ore],
                    [rec.interest_skatteverket_ore],
                    [_ts_text(rec.last_updated)],
                    [_iso(rec.next_reconciliation_on)],
                ]
            )
        elif kind is FileTrailer:
            trailer = rec
    if trailer is None:  # pragma: no cover - the parser raises first
        raise StagingError(f"{file_name}: no trailer; the file is incomplete")
    return {"_trailer": trailer, "_sums": sums}
