"""The answer-file layout (our model): writer, streaming parser, strict validation, amounts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import pickle
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_skattekonto.domain.answer_file import (
    LAYOUT,
    LAYOUT_VERSION,
    AnswerFileError,
    Block,
    format_amount,
    iter_blocks,
    parse_amount,
    parse_answer_file,
    write_answer_file,
)
from airflow_provider_skattekonto.domain.identifiers import luhn_check_digit
from airflow_provider_skattekonto.domain.records import Balance, FileHeader, FileTrailer, Record, Transaction

NAME = "SKAHMST_5560000167_20261130_001.txt"
CET = dt.timezone(dt.timedelta(hours=1))


def _with_check_digit(eleven: str) -> str:
    return eleven + luhn_check_digit(eleven[2:])


COMPANY = "165560000167"  # 16 + 556000-0167
OTHER = _with_check_digit("16969600000")  # a handelsbolag
PERSON = "191212121212"  # the classic test personnummer 121212-1212
COORDINATION = _with_check_digit("19900172000")  # samordningsnummer: day 12 + 60

HEADER = FileHeader(LAYOUT_VERSION, "5560000167", dt.datetime(2026, 11, 30, 6, 12, tzinfo=CET), "F-0001")


def balance(principal: str = COMPANY, **changes: object) -> Balance:
    values: dict[str, object] = {
        "principal": principal,
        "reconciled_on": dt.date(2026, 11, 7),
        "balance_skatteverket_ore": -1234500,
        "balance_kronofogden_ore": None,
        "interest_skatteverket_ore": 0,
        "last_updated": dt.datetime(2026, 11, 29, 22, 5, tzinfo=CET),
        "next_reconciliation_on": dt.date(2026, 12, 5),
    }
    values.update(changes)
    return Balance(**values)  # type: ignore[arg-type]


def tx(
    principal: str, sequence: int, text: str = "Moms 2609", s: int | None = -50000, k: int | None = None
) -> Transaction:
    return Transaction(
        principal,
        sequence,
        f"1000000{sequence:05d}",
        dt.date(2026, 11, 9 + sequence % 10),
        dt.date(2026, 11, 12),
        text,
        s,
        k,
    )


def sample_blocks() -> list[tuple[Balance, list[Transaction]]]:
    same = Transaction(COMPANY, 4, None, dt.date(2026, 11, 12), None, "Inbetalning bokförd 261112", 35050, None)
    return [
        (
            balance(COMPANY),
            [
                tx(COMPANY, 1, "Debiterad preliminärskatt", -1234500),
                tx(COMPANY, 2, 'Rättelse moms 2608; beslut "B-17"', 0),
                tx(COMPANY, 3, "Överföring till Kronofogden", 500000, -500000),
                same,
                dataclasses.replace(same, sequence=5),
                tx(COMPANY, 6, "Inbetalning hos Kronofogden", None, 1999),
            ],
        ),
        (balance(OTHER, balance_kronofogden_ore=-77, interest_skatteverket_ore=None, next_reconciliation_on=None), []),
        (balance(PERSON, balance_skatteverket_ore=0), [tx(PERSON, 1, "Intäktsränta", 12)]),
        (balance(COORDINATION), [tx(COORDINATION, 1, "Kostnadsränta", -1)]),
    ]


def written(blocks: list[tuple[Balance, list[Transaction]]] | None = None, header: FileHeader = HEADER) -> bytes:
    out = io.BytesIO()
    write_answer_file(out, header, blocks if blocks is not None else sample_blocks())
    return out.getvalue()


def parse(raw: bytes | list[bytes], name: str = NAME) -> list[Record]:
    source = raw if isinstance(raw, list) else io.BytesIO(raw)
    return list(parse_answer_file(source, source_name=name))


def expected_records(blocks: list[tuple[Balance, list[Transaction]]]) -> list[Record]:
    records: list[Record] = []
    for b, ts in blocks:
        records += [b, *ts]
    return records


# -- round trips ---------------------------------------------------------------------------------------
def test_round_trip_equals_the_records_and_the_returned_trailer() -> None:
    blocks = sample_blocks()
    out = io.BytesIO()
    trailer = write_answer_file(out, HEADER, blocks)
    records = parse(out.getvalue())
    assert records == [HEADER, *expected_records(blocks), trailer]
    assert trailer == FileTrailer(
        principal_count=4,
        transaction_count=8,
        amount_sum_ore=sum(
            (t.amount_skatteverket_ore or 0) + (t.amount_kronofogden_ore or 0) for _, ts in blocks for t in ts
        ),
    )
    assert not out.closed  # the writer leaves the caller's stream open


def test_identical_transactions_on_the_same_day_are_both_kept() -> None:
    records = parse(written())
    fourth, fifth = (
        r for r in records if isinstance(r, Transaction) and r.sequence in (4, 5) and r.principal == COMPANY
    )
    assert (fourth.sequence, fifth.sequence) == (4, 5)
    assert fourth.text == fifth.text and fourth.amount_skatteverket_ore == fifth.amount_skatteverket_ore


def test_written_lines_end_in_crlf_and_quote_semicolons_and_quotes() -> None:
    raw = written()
    assert raw.startswith(b"H;1.0;165560000167;2026-11-30T06:12:00+01:00;F-0001\r\n")
    assert raw.count(b"\r\n") == raw.count(b"\n") == 1 + 4 + 8 + 1
    assert '"Rättelse moms 2608; beslut ""B-17"""'.encode() in raw
    assert b"\r\nE;4;8;" in raw and raw.endswith(b"\r\n")
    assert (
        b"T;165560000167;100000000003;2026-11-12;2026-11-12;\xc3\x96verf\xc3\xb6ring till Kronofogden;5000,00;-5000,00"
        in raw
    )


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda raw: raw, id="crlf"),
        pytest.param(lambda raw: raw.replace(b"\r\n", b"\n"), id="lf"),
        pytest.param(lambda raw: b"\xef\xbb\xbf" + raw, id="bom"),
        pytest.param(lambda raw: b"\xef\xbb\xbf" + raw.replace(b"\r\n", b"\n"), id="bom-lf"),
        pytest.param(lambda raw: raw[:-2], id="no-final-newline"),
        pytest.param(lambda raw: raw + b"\r\n\r\n", id="blank-lines-after-trailer"),
    ],
)
def test_tolerated_variants_parse_the_same(transform) -> None:  # type: ignore[no-untyped-def]
    assert parse(transform(written())) == parse(written())


@pytest.mark.parametrize("size", [1, 3, 7, 4096])
def test_any_chunking_of_an_iterable_parses_the_same(size: int) -> None:
    raw = b"\xef\xbb\xbf" + written()  # chunks split the BOM and multi-byte characters (ä, Ö)
    chunks = [raw[i : i + size] for i in range(0, len(raw), size)]
    assert parse(chunks) == parse(raw)


def test_a_minimal_read_only_object_is_accepted() -> None:
    class Body:
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._data.read(min(size, 5) if size > 0 else size)

    raw = written()
    assert list(parse_answer_file(Body(raw), source_name=NAME)) == parse(raw)  # type: ignore[arg-type]


def test_a_text_mode_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.write_bytes(written())
    with path.open(encoding="utf-8") as stream, pytest.raises(TypeError, match="binary mode"):
        list(parse_answer_file(stream, source_name=path.name))  # type: ignore[arg-type]


def test_the_parser_does_not_close_the_callers_file(tmp_path: Path) -> None:
    path = tmp_path / NAME
    path.write_bytes(written())
    with path.open("rb") as stream:
        assert len(list(parse_answer_file(stream, source_name=path.name))) == 1 + 4 + 8 + 1
        assert not stream.closed


def test_iter_blocks_groups_records_per_principal() -> None:
    grouped = list(iter_blocks(parse(written())))
    assert grouped[0] == HEADER and isinstance(grouped[-1], FileTrailer)
    assert [(b.balance, b.transactions) for b in grouped[1:-1] if isinstance(b, Block)] == sample_blocks()


def test_records_stream_in_order_and_the_trailer_comes_last() -> None:
    kinds = [type(r).__name__[0] for r in parse(written())]
    assert "".join(kinds) == "FBTTTTTTBBTBTF"


def test_records_are_yielded_before_a_later_error_so_consumers_wait_for_the_trailer() -> None:
    raw = written().replace(b"\r\nE;4;8;", b"\r\nE;4;9;")
    seen: list[Record] = []
    with pytest.raises(AnswerFileError, match="antalTransaktioner"):
        for record in parse_answer_file(io.BytesIO(raw), source_name=NAME):
            seen.append(record)
    assert len(seen) == 1 + 4 + 8 and not any(isinstance(r, FileTrailer) for r in seen)


def test_the_layout_table_names_every_model_field() -> None:
    assert set(LAYOUT) == {"H", "S", "T", "E"}
    names = {spec.name for _, specs in LAYOUT.values() for spec in specs}
    assert {"saldoSkatteverket", "beloppKronofogden", "transaktionsidentitet", "kontrollsumma"} <= names


# -- amounts -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "ore"),
    [
        ("0,00", 0),
        ("-0,00", 0),
        ("0,01", 1),
        ("-0,50", -50),
        ("350,50", 35050),
        ("-12345,00", -1234500),
        ("\u221212,50", -1250),
        ("007,00", 700),
        ("98765432109876,54", 9876543210987654),
    ],
)
def test_parse_amount_accepts(text: str, ore: int) -> None:
    assert parse_amount(text) == ore


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12",
        "12,3",
        "12,345",
        "12.30",
        "1 234,00",
        "1\u00a0234,00",
        "1.234,00",
        "+1,00",
        ",50",
        "-,50",
        "--1,00",
        "12,3a",
        "1_000,00",
        " 1,00",
        "1,00 ",
        "\u0661\u0662,\u0663\u0664",
        "12,-5",
        "1,0,00",
        "−",
        "-",
        "1" * 17 + ",00",
        "1" * 5000 + ",00",  # int() would refuse it with another error (max str digits)
    ],
)
def test_parse_amount_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="amount"):
        parse_amount(text)


@pytest.mark.parametrize(
    ("ore", "text"), [(0, "0,00"), (1, "0,01"), (-1, "-0,01"), (-1234500, "-12345,00"), (35050, "350,50")]
)
def test_format_amount(ore: int, text: str) -> None:
    assert format_amount(ore) == text


@given(st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1))
def test_amount_round_trip(ore: int) -> None:
    text = format_amount(ore)
    assert re.fullmatch(r"-?[0-9]+,[0-9]{2}", text)
    assert parse_amount(text) == ore
    assert parse_amount(text.replace("-", "\u2212")) == ore


# -- validation errors -----------------------------------------------------------------------------------
H = "H;1.0;165560000167;2026-11-30T06:12:00+01:00;F-0001"
S1 = f"S;{COMPANY};2026-11-07;-12345,00;;0,00;2026-11-29T22:05:00+01:00;2026-12-05"
T1 = f"T;{COMPANY};100000000001;2026-11-10;2026-11-12;Moms 2609;-500,00;"
T2 = f"T;{COMPANY};;2026-11-11;;Intäktsränta;0,50;"
S2 = f"S;{PERSON};2026-11-07;0,00;;;2026-11-29T22:05:00+01:00;"
T3 = f"T;{PERSON};100000000002;2026-11-12;;Inbetalning hos Kronofogden;;100,00"
E = "E;2;3;-399,50"
GOOD = [H, S1, T1, T2, S2, T3, E]


def lines(*replacements: tuple[int, str | None]) -> bytes:
    """GOOD with line ``index`` (0-based) replaced, or removed when the replacement is None."""
    result = list(GOOD)
    for index, line in sorted(replacements, reverse=True):
        if line is None:
            del result[index]
        else:
            result[index] = line
    return ("\r\n".join(result) + "\r\n").encode()


def test_the_hand_written_file_is_valid() -> None:
    records = parse(lines())
    assert records[-1] == FileTrailer(2, 3, -39950)
    assert records[3] == Transaction(COMPANY, 2, None, dt.date(2026, 11, 11), None, "Intäktsränta", 50, None)


ERRORS = [
    # (id, raw file, line, field, value, words in the reason)
    (
        "bad-check-digit",
        lines((1, S1.replace(COMPANY, "165560000168")), (2, T1.replace(COMPANY, "165560000168"))),
        2,
        "huvudmanId",
        "165560000168",
        "check digit",
    ),
    ("separator-in-id", lines((4, S2.replace(PERSON, "19121212-1212"))), 5, "huvudmanId", "19121212-1212", "12 digits"),
    ("bad-orderer", lines((0, H.replace("165560000167", "5560000167"))), 1, "bestallareId", "5560000167", "16"),
    (
        "orderer-check-digit",
        lines((0, H.replace("165560000167", "165560000166"))),
        1,
        "bestallareId",
        "165560000166",
        "check digit",
    ),
    (
        "impossible-date",
        lines((2, T1.replace("2026-11-10", "2026-02-30"))),
        3,
        "transaktionsdatum",
        "2026-02-30",
        "not a valid date",
    ),
    (
        "basic-format-date",
        lines((3, T2.replace("2026-11-11", "20261111"))),
        4,
        "transaktionsdatum",
        "20261111",
        "YYYY-MM-DD",
    ),
    (
        "bad-interest-date",
        lines((2, T1.replace("2026-11-12", "2026-11-31"))),
        3,
        "ranteberakningsdatum",
        "2026-11-31",
        "date",
    ),
    (
        "bad-reconciliation-date",
        lines((1, S1.replace("2026-11-07", "7/11/2026"))),
        2,
        "avstamningsdatum",
        "7/11/2026",
        "date",
    ),
    (
        "amount-one-decimal",
        lines((2, T1.replace("-500,00", "12,3"))),
        3,
        "beloppSkatteverket",
        "12,3",
        "exactly two decimals",
    ),
    (
        "amount-decimal-point",
        lines((5, T3.replace("100,00", "100.00"))),
        6,
        "beloppKronofogden",
        "100.00",
        "decimal comma",
    ),
    (
        "balance-amount",
        lines((1, S1.replace("-12345,00", "-12 345,00"))),
        2,
        "saldoSkatteverket",
        "-12 345,00",
        "thousands",
    ),
    (
        "naive-timestamp",
        lines((1, S1.replace("+01:00", ""))),
        2,
        "senastUppdaterad",
        "2026-11-29T22:05:00",
        "UTC offset",
    ),
    (
        "bad-timestamp",
        lines((0, H.replace("2026-11-30T06:12:00+01:00", "2026-11-30 06:12"))),
        1,
        "skapad",
        "2026-11-30 06:12",
        "ISO 8601",
    ),
    ("empty-text", lines((2, T1.replace("Moms 2609", ""))), 3, "transaktionstext", "", "empty"),
    ("empty-required-amount", lines((1, S1.replace("-12345,00", ""))), 2, "saldoSkatteverket", "", "empty"),
    ("no-amount", lines((3, T2.replace("0,50", ""))), 4, "beloppSkatteverket", "", "at least one"),
    ("too-many-fields", lines((2, T1 + ";extra")), 3, "posttyp", "T", "must have 8 fields"),
    ("unquoted-semicolon", lines((2, T1.replace("Moms 2609", "Moms; 2609"))), 3, "posttyp", "T", "quotes"),
    ("too-few-fields", lines((1, S1.rsplit(";", 1)[0])), 2, "posttyp", "S", "must have 8 fields"),
    ("unknown-record-type", lines((3, "X" + T2[1:])), 4, "posttyp", "X", "unknown record type"),
    ("missing-header", lines((0, None)), 1, "posttyp", "S", "header"),
    ("second-header", lines((4, H)), 5, "posttyp", "H", "second header"),
    ("unsupported-version", lines((0, H.replace(";1.0;", ";2.0;"))), 1, "layoutversion", "2.0", "layout version"),
    ("t-before-any-s", lines((1, None)), 2, "huvudmanId", COMPANY, "before any balance"),
    (
        "t-of-another-principal",
        lines((3, T2.replace(COMPANY, PERSON))),
        4,
        "huvudmanId",
        PERSON,
        "no balance record before it",
    ),
    (
        "t-of-an-earlier-block",
        lines((5, T3.replace(PERSON, COMPANY))),
        6,
        "huvudmanId",
        COMPANY,
        "block started on line 2",
    ),
    (
        "duplicate-block",
        lines((4, S2.replace(PERSON, COMPANY)), (5, T3.replace(PERSON, COMPANY))),
        5,
        "huvudmanId",
        COMPANY,
        "second block",
    ),
    ("principal-count", lines((6, "E;3;3;-399,50")), 7, "antalHuvudman", "3", "trailer says 3 but the file holds 2"),
    ("transaction-count", lines((6, "E;2;4;-399,50")), 7, "antalTransaktioner", "4", "holds 3"),
    ("control-sum", lines((6, "E;2;3;-399,49")), 7, "kontrollsumma", "-399,49", "holds -399,50"),
    ("bad-count", lines((6, "E;2;three;-399,50")), 7, "antalTransaktioner", "three", "whole number"),
    ("record-after-trailer", lines((6, E + "\r\n" + T3)), 8, "posttyp", "T", "after the trailer"),
    (
        "next-reconciliation-not-after",
        lines((1, S1.replace("2026-12-05", "2026-11-07"))),
        2,
        "nastaAvstamningsdatum",
        "2026-11-07",
        "must be after",
    ),
    (
        "line-break-in-text",
        lines((3, T2.replace("Intäktsränta", '"Intäkts\nränta"'))),
        4,
        "transaktionstext",
        "Intäkts\nränta",
        "line break",
    ),
]


@pytest.mark.parametrize(
    ("raw", "line", "field", "value", "words"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_each_error_names_file_line_field_and_value(raw: bytes, line: int, field: str, value: str, words: str) -> None:
    with pytest.raises(AnswerFileError) as caught:
        parse(raw)
    error = caught.value
    message = str(error)
    assert (error.source_name, error.line_number, error.field, error.value) == (NAME, line, field, value), message
    assert message.startswith(f"{NAME} line {line}, field {field}={value!r}: "), message
    assert words.lower() in message.lower()
    assert "The file was not loaded; " in message
    assert isinstance(error, ValueError)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        pytest.param(lines((6, None)), "ends without a trailer", id="missing-trailer"),
        pytest.param(b"", "empty", id="empty-file"),
        pytest.param(b"\xef\xbb\xbf", "empty", id="only-a-bom"),
        pytest.param(lines()[: lines().index(b"\r\nS;" + PERSON.encode())], "ends without a trailer", id="truncated"),
    ],
)
def test_a_truncated_file_is_a_file_level_error(raw: bytes, words: str) -> None:
    with pytest.raises(AnswerFileError) as caught:
        parse(raw)
    assert caught.value.line_number is None and caught.value.field is None
    message = str(caught.value)
    assert message.startswith(f"{NAME}: ") and words in message
    assert "download it again" in message


def test_a_file_cut_inside_a_line_names_that_line() -> None:
    raw = lines()
    cut = raw[: raw.index(b"Inbetalning hos") + 5]
    with pytest.raises(AnswerFileError) as caught:
        parse(cut)
    assert caught.value.line_number == 6 and caught.value.field == "posttyp"


def test_a_blank_line_inside_the_file_is_refused() -> None:
    with pytest.raises(AnswerFileError, match=f"{NAME} line 4: empty line"):
        parse(lines((3, "\r\n" + T2)))


def test_invalid_utf8_names_its_line() -> None:
    raw = lines().replace("Intäktsränta".encode(), "Intäktsränta".encode("latin-1"))  # not UTF-8
    with pytest.raises(AnswerFileError, match=f"{NAME} line 4: the file is not valid UTF-8"):
        parse(raw)
    with pytest.raises(AnswerFileError, match=f"{NAME} line 1: the file is not valid UTF-8"):
        parse(b"H;1.0;\xff\r\n")


def test_bad_quoting_is_reported() -> None:
    with pytest.raises(AnswerFileError, match=f"{NAME} line 4: malformed quoting"):
        parse(lines((3, T2.replace("Intäktsränta", '"Intäkts"ränta'))))


def test_long_values_are_shortened_in_the_message() -> None:
    long_text = "9" * 500
    with pytest.raises(AnswerFileError) as caught:
        parse(lines((2, T1.replace("-500,00", long_text + ",00"))))
    assert caught.value.value == long_text + ",00" and caught.value.field == "beloppSkatteverket"
    assert "more than 18 digits" in str(caught.value)
    assert len(str(caught.value)) < 600 and "..." in str(caught.value)


def test_the_error_survives_pickling() -> None:
    with pytest.raises(AnswerFileError) as caught:
        parse(lines((2, T1.replace("-500,00", "12,3"))))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.line_number == 3 and copy.field == "beloppSkatteverket"


# -- the writer refuses what the layout cannot hold ----------------------------------------------------------
@pytest.mark.parametrize(
    ("blocks", "words"),
    [
        ([(balance(), [tx(COMPANY, 2)])], "sequence 1"),
        ([(balance(), [tx(PERSON, 1)])], "must have principal"),
        ([(balance(), []), (balance(), [])], "more than one block"),
        ([(balance(), [tx(COMPANY, 1, s=None, k=None)])], "neither amount"),
        ([(balance(), [tx(COMPANY, 1, text="two\nlines")])], "one-line"),
        ([(balance(), [tx(COMPANY, 1, text="")])], "one-line"),
        ([(balance(last_updated=dt.datetime(2026, 11, 29, 22)), [])], "timezone-aware"),
        ([(balance(principal="5560000167"), [])], "12 digits"),
        ([(balance(principal="165560000168"), [])], "check digit"),
    ],
)
def test_the_writer_refuses_records_the_layout_cannot_hold(blocks: list, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=words):
        write_answer_file(io.BytesIO(), HEADER, blocks)


def test_the_writer_refuses_another_layout_version() -> None:
    with pytest.raises(ValueError, match="layout version"):
        write_answer_file(io.BytesIO(), FileHeader("2.0", "5560000167", HEADER.created_at, "F"), [])


# -- streaming ---------------------------------------------------------------------------------------------
def _generated(path: Path, transactions_per_principal: int) -> int:
    from airflow_provider_skattekonto.domain.calendar import STOCKHOLM
    from airflow_provider_skattekonto.sandbox.data import write_answer_file as write_sandbox_file

    morning = dt.datetime(2026, 11, 30, 7, tzinfo=STOCKHOLM)
    size, _ = write_sandbox_file(
        path,
        orderer="5560000167",
        delivery_morning=morning,
        created_at=morning,
        file_id=path.stem,
        seed=3,
        principals=500,
        transactions_per_principal=transactions_per_principal,
    )
    return size


def _peak_while_parsing(path: Path) -> tuple[int, int]:
    def records() -> Iterator[Record]:
        with path.open("rb") as stream:
            yield from parse_answer_file(stream, source_name=path.name)

    tracemalloc.start()
    try:
        count = 0
        for record in records():
            count += isinstance(record, Transaction)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, peak


def test_memory_does_not_grow_with_the_file_size(tmp_path: Path) -> None:
    small_size = _generated(tmp_path / "small.txt", 12)
    big_size = _generated(tmp_path / "big.txt", 150)  # same principals, twelve times the transactions
    _, small_peak = _peak_while_parsing(tmp_path / "small.txt")
    big_count, big_peak = _peak_while_parsing(tmp_path / "big.txt")
    assert big_count > 100_000 and big_size > 10 * small_size
    assert big_peak < small_peak * 1.5 + 256 * 1024, (small_peak, big_peak)
    assert big_peak < big_size / 20, (big_peak, big_size)
