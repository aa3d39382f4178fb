"""The answer-file layout: round trips, tolerated encodings, and one named error per kind of bad line."""

from __future__ import annotations

import datetime as dt
import io
import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_skattekonto.domain.answer_file import (
    AnswerFileError,
    format_amount,
    parse_amount,
    parse_answer_file,
    write_answer_file,
)
from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
from airflow_provider_skattekonto.domain.records import Balance, FileHeader, FileTrailer, Transaction
from airflow_provider_skattekonto.sandbox.data import snapshot_blocks
from airflow_provider_skattekonto.sandbox.data import write_answer_file as write_sandbox_file

MORNING = dt.datetime(2026, 11, 30, 7, 0, tzinfo=STOCKHOLM)
HEADER = FileHeader("1.0", "5560000167", MORNING - dt.timedelta(minutes=25), "F-1")
DOC = Path(__file__).resolve().parents[2] / "docs" / "answer-file-layout.md"


def blocks(principals: int = 3, per_principal: int = 4) -> list[tuple[Balance, list[Transaction]]]:
    return [
        (balance, list(transactions))
        for balance, transactions in snapshot_blocks(
            "5560000167", MORNING, seed=5, principals=principals, transactions_per_principal=per_principal
        )
    ]


def written(data: list[tuple[Balance, list[Transaction]]] | None = None) -> bytes:
    out = io.BytesIO()
    write_answer_file(out, HEADER, data if data is not None else blocks())
    return out.getvalue()


def parse(raw: bytes, name: str = "SKAHMST_test.txt") -> list:  # type: ignore[type-arg]
    return list(parse_answer_file(io.BytesIO(raw), source_name=name))


def test_round_trip_equals_the_records() -> None:
    data = blocks()
    records = parse(written(data))
    assert records[0] == HEADER
    expected = [record for balance, transactions in data for record in (balance, *transactions)]
    assert records[1:-1] == expected
    trailer = records[-1]
    assert isinstance(trailer, FileTrailer)
    assert trailer.transaction_count == sum(len(t) for _, t in data)


def test_bom_lf_and_quoted_texts_are_read() -> None:
    balance, _ = blocks(1, 2)[0]
    tricky = Transaction(balance.principal, 1, None, dt.date(2026, 11, 20), None, 'Rättelse; "moms" 2608', -44050, None)
    raw = written([(balance, [tricky])])
    assert parse(b"\xef\xbb\xbf" + raw.replace(b"\r\n", b"\n"))[2] == tricky


def test_the_documented_example_parses() -> None:
    example = re.search(r"## Example\n\n```\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert example is not None
    records = parse(example.group(1).encode("utf-8"))
    assert isinstance(records[-1], FileTrailer) and records[-1].transaction_count == 5


def line_of(raw: bytes, prefix: bytes) -> int:
    return next(i for i, line in enumerate(raw.split(b"\r\n"), 1) if line.startswith(prefix))


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda raw: raw.replace(b";-", b";-1.5", 1), None, "amount"),
        (
            lambda raw: re.sub(rb"\nS;16(\d{10})", lambda m: b"\nS;16" + m.group(1)[:9] + b"X", raw, count=1),
            "huvudmanId",
            "",
        ),
        (lambda raw: re.sub(rb"(\nT;\d{12};[^;]*;)2026-11-", rb"\g<1>2026-13-", raw, count=1), "transaktionsdatum", ""),
        (lambda raw: raw.replace(b"\r\nT;", b"\r\nX;", 1), None, "record type"),
        (lambda raw: raw.rsplit(b"E;", 1)[0], None, "trailer"),
        (
            lambda raw: re.sub(
                rb"E;(\d+);(\d+);", lambda m: b"E;" + m.group(1) + b";" + str(int(m.group(2)) + 1).encode() + b";", raw
            ),
            None,
            "trailer says",
        ),
    ],
)
def test_each_bad_line_names_file_line_field_and_value(mutate, field, reason) -> None:  # type: ignore[no-untyped-def]
    raw = mutate(written())
    with pytest.raises(AnswerFileError) as caught:
        parse(raw, "SKAHMST_5560000167_20261130_001.txt")
    message = str(caught.value)
    assert "SKAHMST_5560000167_20261130_001.txt" in message
    if field:
        assert caught.value.field == field and field in message
        assert caught.value.line_number is not None and f"line {caught.value.line_number}" in message
    assert reason.lower() in message.lower()


def test_a_principal_in_two_blocks_is_refused() -> None:
    data = blocks(2, 2)
    lines = written(data).split(b"\r\n")
    first_block = lines[1 : 2 + len(data[0][1])]
    raw = b"\r\n".join(lines[:-2] + first_block + lines[-2:])  # the block again, before the trailer
    with pytest.raises(AnswerFileError, match=data[0][0].principal) as caught:
        parse(raw)
    assert caught.value.line_number == len(lines) - 1


def test_memory_stays_flat_while_streaming(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    size, _ = write_sandbox_file(
        path,
        orderer="5560000167",
        delivery_morning=MORNING,
        created_at=MORNING,
        file_id="BIG",
        seed=2,
        principals=2000,
        transactions_per_principal=15,
    )
    tracemalloc.start()
    with path.open("rb") as stream:
        count = sum(1 for record in parse_answer_file(stream, source_name=path.name) if isinstance(record, Transaction))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count > 40_000
    assert peak < size / 4  # the records are not kept: memory is a fraction of the file


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_amounts_round_trip(ore: int) -> None:
    text = format_amount(ore)
    assert re.fullmatch(r"-?\d+,\d\d", text)
    assert parse_amount(text) == ore


def test_unicode_minus_is_accepted() -> None:
    assert parse_amount("\u221212,50") == -1250
