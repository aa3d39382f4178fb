"""Loading real answer files: the parser, the sha256 re-check, and the sandbox's overlapping daily files."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from pathlib import Path

import pytest

from airflow_provider_skattekonto.domain.answer_file import AnswerFileError
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.loading import FileChecksumError, load_answer_stream
from airflow_provider_skattekonto.sandbox import data

from .builders import Block, at, file_bytes, header, random_blocks
from .conftest import Warehouse

ORDERER = "5560000167"
PERIOD = dt.date(2026, 2, 28)


def morning(day: int, month: int = 3) -> dt.datetime:
    return dt.datetime(2026, month, day, 7, 0, tzinfo=STOCKHOLM)


def sandbox_file(tmp_path: Path, day: int, *, month: int = 3, principals: int = 40, tpp: int = 30) -> tuple[Path, str]:
    """The sandbox's file for a delivery morning (same seed: consecutive mornings overlap)."""
    path = tmp_path / f"SKAHMST_{ORDERER}_2026{month:02d}{day:02d}.txt"
    _, sha = data.write_answer_file(
        path,
        orderer=ORDERER,
        delivery_morning=morning(day, month),
        created_at=morning(day, month).replace(hour=5, minute=30),
        file_id=f"SKV-2026{month:02d}{day:02d}-{ORDERER}",
        seed=7,
        principals=principals,
        transactions_per_principal=tpp,
    )
    return path, sha


def load_path(wh: Warehouse, path: Path, sha: str, **kw: object):  # type: ignore[no-untyped-def]
    with path.open("rb") as stream:
        return load_answer_stream(
            wh.open(),
            stream,
            dialect=wh.dialect,
            file_name=path.name,
            sha256=sha,
            prefix=wh.prefix,
            schema=wh.schema,
            **kw,  # type: ignore[arg-type]
        )


def count(wh: Warehouse, table: str = "transactions") -> int:
    [(n,)] = wh.query(f"SELECT COUNT(*) FROM {getattr(wh.names, table)}")
    return int(n)


def test_consecutive_overlapping_mornings_keep_exactly_the_newest_snapshot(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    tue, tue_sha = sandbox_file(tmp_path, 10)
    wed, wed_sha = sandbox_file(tmp_path, 11)
    thu, thu_sha = sandbox_file(tmp_path, 12)
    first = load_path(warehouse, tue, tue_sha, expected_orderer="16" + ORDERER)
    assert first.principals_loaded == first.principal_count == 40
    assert count(warehouse) == first.transaction_count
    third = load_path(warehouse, thu, thu_sha)
    assert third.principals_replaced == 40
    assert count(warehouse) == third.transaction_count  # overlap replaced, not appended
    [(total,)] = warehouse.query(
        "SELECT SUM(COALESCE(amount_skatteverket_ore, 0) + COALESCE(amount_kronofogden_ore, 0))"
        f" FROM {warehouse.names.transactions}"
    )
    assert int(total) == third.amount_sum_ore
    before = warehouse.dump()
    # Wednesday's file arrives late (backfill): older than Thursday's for every principal
    late = load_path(warehouse, wed, wed_sha)
    assert (late.principals_loaded, late.principals_skipped_older, late.transactions_inserted) == (0, 40, 0)
    after = warehouse.dump()
    assert after["transactions"] == before["transactions"] and after["balances"] == before["balances"]
    # and a re-delivery of Thursday's file is a no-op
    assert load_path(warehouse, thu, thu_sha).noop
    assert warehouse.dump() == after


def test_new_reconciliation_period_from_the_sandbox_keeps_the_old_period(warehouse: Warehouse, tmp_path: Path) -> None:
    march, march_sha = sandbox_file(tmp_path, 31)  # period from 2026-03-07
    april, april_sha = sandbox_file(tmp_path, 14, month=4)  # period from 2026-04-04
    m = load_path(warehouse, march, march_sha)
    a = load_path(warehouse, april, april_sha)
    assert a.principals_replaced == 0 and a.transactions_deleted == 0
    assert count(warehouse) == m.transaction_count + a.transaction_count
    assert count(warehouse, "balances") == 80


def test_sandbox_identical_rows_are_all_kept(fast_warehouse: Warehouse, tmp_path: Path) -> None:
    path, sha = sandbox_file(tmp_path, 27, principals=200, tpp=60)
    result = load_path(fast_warehouse, path, sha)
    n = fast_warehouse.names
    [(rows, distinct)] = fast_warehouse.query(
        "SELECT COUNT(*), COUNT(DISTINCT principal || '|' || transaction_date || '|' || transaction_text || '|'"
        " || COALESCE(transaction_id, '') || '|' || COALESCE(amount_skatteverket_ore, 0) || '|'"
        f" || COALESCE(amount_kronofogden_ore, 0)) FROM {n.transactions}"
    )
    assert rows == result.transaction_count
    assert distinct < rows, "the sandbox file should hold identical rows; all of them must be stored"


def _corrupt_amount_near_line(content: bytes, near: int) -> tuple[bytes, int]:
    """Break beloppSkatteverket on the first plain transaction line at or after ``near``."""
    lines = content.split(b"\r\n")
    for number in range(near, len(lines)):
        line = lines[number - 1]
        if line.startswith(b"T;") and b'"' not in line:
            fields = line.split(b";")
            fields[6] = b"12,3x"  # beloppSkatteverket
            lines[number - 1] = b";".join(fields)
            return b"\r\n".join(lines), number
    raise AssertionError("no plain transaction line")


def test_parse_error_deep_in_the_file_leaves_every_table_unchanged(warehouse: Warehouse) -> None:
    warehouse.load(_records_of(at(1), "F0", 3), sha256="0" * 64)
    before = warehouse.dump()
    content = file_bytes(header("F1", at(2)), random_blocks(60, 100, seed=3, reconciled_on=PERIOD))
    bad, line = _corrupt_amount_near_line(content, 5000)  # after ~4950 good transactions
    with pytest.raises(AnswerFileError, match=rf"line {line}, field beloppSkatteverket='12,3x'") as caught:
        load_answer_stream(
            warehouse.open(),
            io.BytesIO(bad),
            dialect=warehouse.dialect,
            file_name="SKAHMST_bad.txt",
            sha256=hashlib.sha256(bad).hexdigest(),
            prefix=warehouse.prefix,
            schema=warehouse.schema,
            batch_rows=700,  # several batches reached the database before the error
        )
    assert caught.value.line_number == line and "SKAHMST_bad.txt" in str(caught.value)
    assert warehouse.dump() == before


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\r"], ids=["nul", "esc", "lone-cr"])
def test_a_control_character_in_a_text_is_refused_before_the_database_sees_it(
    warehouse: Warehouse, tmp_path: Path, control: str
) -> None:
    """PostgreSQL refuses NUL itself (a raw driver error that was retried); SQLite and ESC stored it."""
    before = warehouse.dump()
    content = file_bytes(header("F1", at(2)), random_blocks(60, 100, seed=3, reconciled_on=PERIOD))
    lines = content.split(b"\r\n")
    number = next(n for n in range(5000, len(lines)) if lines[n - 1].startswith(b"T;") and b'"' not in lines[n - 1])
    fields = lines[number - 1].split(b";")
    fields[5] = fields[5][:3] + control.encode() + fields[5][3:]  # transaktionstext
    lines[number - 1] = b";".join(fields)
    path = tmp_path / "SKAHMST_control.txt"
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(AnswerFileError) as caught:
        load_path(warehouse, path, hashlib.sha256(path.read_bytes()).hexdigest(), batch_rows=700)
    error = caught.value
    assert (error.line_number, error.field) == (number, "transaktionstext"), str(error)
    assert control in (error.value or "") and "control character" in str(error)
    assert warehouse.dump() == before


def test_missing_trailer_leaves_every_table_unchanged(fast_warehouse: Warehouse) -> None:
    before = fast_warehouse.dump()
    content = file_bytes(header("F1", at(2)), random_blocks(20, 50, seed=4, reconciled_on=PERIOD))
    truncated = content[: content.rindex(b"\r\nE;") + 2]
    with pytest.raises(AnswerFileError, match="without a trailer"):
        load_answer_stream(
            fast_warehouse.open(),
            io.BytesIO(truncated),
            dialect=fast_warehouse.dialect,
            file_name="t.txt",
            sha256=hashlib.sha256(truncated).hexdigest(),
            prefix=fast_warehouse.prefix,
            schema=fast_warehouse.schema,
        )
    assert fast_warehouse.dump() == before


def test_checksum_mismatch_rolls_back_even_after_all_rows_were_sent(fast_warehouse: Warehouse) -> None:
    before = fast_warehouse.dump()
    content = file_bytes(header("F1", at(2)), random_blocks(20, 50, seed=5, reconciled_on=PERIOD))
    for sha, size, message in (
        ("ab" * 32, None, "sha256 of the bytes read"),
        (hashlib.sha256(content).hexdigest(), len(content) + 1, "expected"),
    ):
        with pytest.raises(FileChecksumError, match=message):
            load_answer_stream(
                fast_warehouse.open(),
                io.BytesIO(content),
                dialect=fast_warehouse.dialect,
                file_name="x.txt",
                sha256=sha,
                size=size,
                prefix=fast_warehouse.prefix,
                schema=fast_warehouse.schema,
                batch_rows=100,
            )
        assert fast_warehouse.dump() == before
    ok = load_answer_stream(
        fast_warehouse.open(),
        io.BytesIO(content),
        dialect=fast_warehouse.dialect,
        file_name="x.txt",
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        prefix=fast_warehouse.prefix,
        schema=fast_warehouse.schema,
    )
    assert ok.transactions_inserted == 1000


def test_noop_still_verifies_the_checksum(fast_warehouse: Warehouse) -> None:
    content = file_bytes(header("F1", at(2)), random_blocks(5, 5, seed=6, reconciled_on=PERIOD))
    sha = hashlib.sha256(content).hexdigest()
    kw = {"prefix": fast_warehouse.prefix, "schema": fast_warehouse.schema, "file_name": "f.txt"}
    load_answer_stream(fast_warehouse.open(), io.BytesIO(content), dialect=fast_warehouse.dialect, sha256=sha, **kw)
    changed = content.replace(b"Moms", b"MOMS")
    assert changed != content
    with pytest.raises(FileChecksumError):
        load_answer_stream(fast_warehouse.open(), io.BytesIO(changed), dialect=fast_warehouse.dialect, sha256=sha, **kw)


def _records_of(created: dt.datetime, file_id: str, n: int):  # type: ignore[no-untyped-def]
    from .builders import org_principal, records

    blocks = [
        Block(org_principal(90 + i), PERIOD, i, [(PERIOD + dt.timedelta(days=1), "x", i, None, None)]) for i in range(n)
    ]
    return records(header(file_id, created), blocks)
